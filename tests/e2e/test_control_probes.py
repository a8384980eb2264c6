"""The standard gRPC services on a real mount's control socket (issue 15, point 6):
``grpc.health.v1.Health`` and server reflection, asked with grpc's own health
stub and grpcio-reflection's client, never with MusicFS's control.proto, as a
health probe or ``grpcurl`` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from musicfs.control.client import ControlClient
from tests.e2e.helpers import Mount, is_mounted, mounted, wait_until
from tests.e2e.library import Library, make_origin
from tests.e2e.test_offline import JOGA

pytestmark = [pytest.mark.mount, pytest.mark.media]

CONTROL = "musicfs.control.v1.MusicFS"
HEALTH = "grpc.health.v1.Health"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GONE = -1  # nothing answers on the socket
CANCELLED = -2  # the server cancelled the call as it stopped (its grace ran out)


def _channel(mount: Mount) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{mount.ready_status['socket']}")


def _check(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    """The health check's answer for *service*, or GONE, or CANCELLED."""
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return GONE
        if exc.code() == grpc.StatusCode.CANCELLED:
            return CANCELLED
        raise
    status: int = response.status
    return status


@pytest.fixture
def own_mount(library: Library, tmp_path: Path) -> Iterator[Mount]:
    """A mount of one track that the test may shut down."""
    make_origin(library, tmp_path / "origin", [JOGA])
    with mounted([tmp_path / "origin"], tmp_path / "mnt", tmp_path / "cache") as mount:
        yield mount


def test_health_is_serving_then_not_serving_while_unmounting_then_gone(own_mount: Mount) -> None:
    mount = own_mount
    track = next(p for p in mount.mountpoint.rglob("*.flac"))
    with _channel(mount) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert _check(stub) == SERVING
        assert _check(stub, CONTROL) == SERVING
        unknown = health_pb2.HealthCheckRequest(service="no.such.Service")
        with pytest.raises(grpc.RpcError) as raised:
            stub.Check(unknown, timeout=10)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == SERVING
        # An open file holds the unmount (the daemon drains open files first):
        # meanwhile the daemon still answers, and says it is not serving.
        with track.open("rb") as held:
            held.read(1)
            with ControlClient(Path(mount.ready_status["socket"])) as client:
                client.shutdown(drain_timeout=60)
            wait_until(lambda: _check(stub) == NOT_SERVING, timeout=20, what="NOT_SERVING")
            assert _check(stub, CONTROL) == NOT_SERVING
            assert next(watch).status == NOT_SERVING  # a watching probe is told
            assert is_mounted(mount.mountpoint)
        wait_until(lambda: not is_mounted(mount.mountpoint), timeout=30, what="the unmount")
        # A check that meets the server's last moments may be cancelled; then
        # nothing answers and the socket file is gone.
        wait_until(lambda: _check(stub) == GONE, timeout=30, what="the socket to go away")
        assert not Path(mount.ready_status["socket"]).exists()


def test_reflection_lists_and_describes_the_services(library_mount: Mount) -> None:
    with _channel(library_mount) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {CONTROL, HEALTH} <= services
        # What grpcurl does: call GetStatus from the descriptors the server
        # hands out, without MusicFS's generated code.
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(CONTROL).FindMethodByName("GetStatus")
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        get_status = channel.unary_unary(
            f"/{CONTROL}/GetStatus",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        status = get_status(request(), timeout=10)
    assert status.mountpoint == str(library_mount.mountpoint)
    assert status.tracks == int(library_mount.ready_status["tracks"]) > 0
