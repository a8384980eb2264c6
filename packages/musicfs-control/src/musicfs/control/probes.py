"""The standard gRPC services beside ours on the control socket.

`MountHealth` is ``grpc.health.v1.Health`` (grpcio-health-checking) answering
from the mount's state (`MountControl.state`): SERVING for the overall service
("") and for ours while the mount serves files (READY, SYNCING, DEGRADED: an
origin offline still leaves the cache serving, and restarting would not bring
the origin back), NOT_SERVING before that and once it unmounts. Server
reflection (grpcio-reflection) lists both services and hands out their
descriptors. Together they let health probes and ``grpcurl`` work without
control.proto.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from musicfs.control.v1 import control_pb2
from musicfs.core.mount.facade import MountControl, MountState

log = logging.getLogger(__name__)

#: Our service's full name, as health checks and reflection name it.
CONTROL_SERVICE: str = control_pb2.DESCRIPTOR.services_by_name["MusicFS"].full_name
HEALTH_SERVICE: str = health.SERVICE_NAME
#: The health check's names: the whole server ("") and our service.
CHECKED = (health.OVERALL_HEALTH, CONTROL_SERVICE)
#: The states in which the mount answers file-system calls.
SERVING_STATES = frozenset({MountState.READY, MountState.SYNCING, MountState.DEGRADED})
#: Seconds between looks at the mount's state for Watch streams: the mount has
#: no event for its state changes, and reading the state is a cheap snapshot.
_POLL = 0.25

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING


class MountHealth(health.HealthServicer):
    """``grpc.health.v1.Health`` for one mount: Check reads the state on every
    call; Watch streams hear of a change within `_POLL` s (a thread looks)."""

    def __init__(self, fs: MountControl) -> None:
        super().__init__()
        self.fs = fs
        self._shown: int | None = None
        self._refresh_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> int:
        """SERVING or NOT_SERVING for the mount's state now."""
        try:
            state = self.fs.state()
        except Exception:  # the mount is going away under us: a probe sees it is not serving
            log.debug("the mount's state could not be read", exc_info=True)
            return NOT_SERVING
        return SERVING if state in SERVING_STATES else NOT_SERVING

    def refresh(self) -> None:
        """Show the state now; Watch streams are told only of a change."""
        with self._refresh_lock:
            status = self.status()
            if status != self._shown:
                self._shown = status
                for service in CHECKED:
                    self.set(service, status)

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        self.refresh()
        return super().Check(request, context)

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Any = None,
    ) -> Any:
        self.refresh()
        return super().Watch(request, context, send_response_callback)

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="musicfs-health", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stopped.wait(_POLL):
            self.refresh()

    def stop(self) -> None:
        """NOT_SERVING from now on (Watch streams are told), whatever the state."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.enter_graceful_shutdown()


def add_probes(fs: MountControl, server: grpc.Server) -> MountHealth:
    """Add the health service and server reflection to *server*; the health
    service's `start` follows the server's, its `stop` comes before it."""
    checks = MountHealth(fs)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    reflection.enable_server_reflection(
        (CONTROL_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    return checks
