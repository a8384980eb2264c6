"""Running one WASM guest under the host's limits: its instance, calls and failures.

`Guest` holds a compiled module and its current instance. `Guest.call` runs
one export with its input under `ResourceLimits` (CPU by epoch interruption,
armed by the one `Watchdog` thread; memory by the engine's memory creator,
`musicfs.plugins.wasm_memory`) and turns a trap, a wasmtime error or a limit
into a `PluginError` naming the plugin. After a failure the instance is
dropped and the module instantiated afresh for the next call, so no
half-updated guest state is ever used. Calls into one guest are serialised.

Boundaries: knows the ABI's calling convention (`musicfs.plugins.wasm_abi`),
not what a call means; loading is `musicfs.plugins.wasm`, the load-time checks
`musicfs.plugins.wasm_abi`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from wasmtime import (
    Caller,
    Engine,
    ExitTrap,
    Func,
    Instance,
    Linker,
    Memory,
    Module,
    Store,
    Trap,
    TrapCode,
    WasiConfig,
    WasmtimeError,
)

from musicfs.plugins.api import PluginError, ResourceLimits
from musicfs.plugins.wasm_abi import (
    EXPORT_TYPES,
    MAX_LOG_BYTES,
    MAX_LOGS_PER_CALL,
    MAX_RESULT_BYTES,
    MAX_TABLE_ELEMENTS,
    MIB,
    gist,
)
from musicfs.plugins.wasm_memory import MemoryCap

# Guests' messages (``musicfs.log``) go to the logger the ABI documents.
log = logging.getLogger("musicfs.plugins.wasm")


class Watchdog:
    """One thread that bumps an engine's epoch when a call's time is up.

    Each plugin has its own engine and a store deadline of one tick, so a bump
    interrupts exactly the call that armed it. A bump that lands just after
    the call ended is harmless: the next call sets its deadline afresh.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Engine]] = []
        self._armed: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, engine: Engine, seconds: float) -> int:
        with self._cond:
            token = next(self._tokens)
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, engine))
            self._armed.add(token)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="musicfs-wasm-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, engine = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                engine.increment_epoch()


WATCHDOG = Watchdog()


class Guest:
    """One compiled guest module and its current instance, under the limits."""

    def __init__(
        self,
        path: Path,
        *,
        limits: ResourceLimits,
        preopen_dirs: Mapping[str, str | os.PathLike[str]],
        max_input_bytes: int,
        engine: Engine,
        module: Module,
        linker: Linker,
        exports: frozenset[str],
        memory_cap: MemoryCap,
    ) -> None:
        self.limits = limits
        self.preopen_dirs = dict(preopen_dirs)
        self.max_input_bytes = max_input_bytes
        self.memory_cap = memory_cap
        self.path = path
        self.label = f"WASM plugin {str(path)!r}"  # becomes the name once known
        self.engine = engine
        self.module = module
        self.linker = linker
        self.module_exports = exports
        self.lock = threading.Lock()
        self.closed = False
        self.config_json: bytes | None = None
        self._store: Store | None = None
        self._exports: dict[str, Func] = {}
        self._memory: Memory | None = None
        self._logs = 0

    # -- instance lifecycle ------------------------------------------------

    def _instantiate(self) -> None:
        limits = self.limits
        store = Store(self.engine)
        # Linear memory is capped by the engine's memory creator (wasm_memory),
        # which records a refused memory.grow; a store limit would hide it.
        store.set_limits(
            table_elements=MAX_TABLE_ELEMENTS,
            instances=1,
            tables=4,
            memories=1,
        )
        if limits.allow_filesystem:
            wasi = WasiConfig()  # no args, env or stdio
            for guest_path, host_path in self.preopen_dirs.items():
                wasi.preopen_dir(str(host_path), guest_path, fs_mutable=False)
            store.set_wasi(wasi)
        self._store = store
        with self._limited("instantiation"):
            instance: Instance = self.linker.instantiate(store, self.module)
            exports = instance.exports(store)
            memory = exports["memory"]
            if not isinstance(memory, Memory):  # checked at load; keeps mypy honest
                raise PluginError(f"{self.label} exports no memory")
            self._memory = memory
            self._exports = {
                name: func for name in EXPORT_TYPES if isinstance(func := exports.get(name), Func)
            }
            if self.config_json is not None and "init" in self._exports:
                self._call_json("init", self.config_json)  # replayed; result ignored

    def discard(self) -> None:
        """Forget the instance; the next call instantiates the module afresh."""
        self._store = None
        self._memory = None
        self._exports = {}

    def close(self) -> None:
        with self.lock:
            self.discard()
            self.closed = True

    # -- calls -------------------------------------------------------------

    def call(self, export: str, payload: bytes | None) -> bytes | None:
        """Call *export* with *payload* (None: no input) under the limits.

        Returns the result's bytes, or None for "no result"; raises
        `PluginError` for a guest error, a trap or a limit.
        """
        with self.lock:
            if self.closed:
                raise PluginError(f"{self.label} has been shut down")
            if self._store is None:
                try:
                    self._instantiate()
                except BaseException:
                    self.discard()
                    raise
            with self._limited(export):
                return self._call_json(export, payload)

    @contextmanager
    def _limited(self, what: str) -> Iterator[None]:
        """Run guest code for *what* under the CPU limit, translating its failures.

        A trap or a wasmtime error discards the instance (see `discard`).
        """
        store = self._store
        assert store is not None
        limits = self.limits
        self._logs = 0
        self.memory_cap.refused = None
        store.set_epoch_deadline(1)
        token = WATCHDOG.arm(self.engine, limits.max_cpu_time_ms / 1000)
        try:
            yield
        except Trap as exc:
            note = self._memory_note()
            self.discard()
            if exc.trap_code == TrapCode.INTERRUPT:
                raise PluginError(
                    f"{self.label} exceeded its CPU time limit (max_cpu_time_ms="
                    f"{limits.max_cpu_time_ms}) in {what} and was stopped"
                ) from None
            if self.memory_cap.refused is not None:
                raise PluginError(self._over_memory(what, f"then trapped: {gist(exc)}")) from None
            raise PluginError(f"{self.label} trapped in {what}: {gist(exc)}{note}") from None
        except ExitTrap as exc:
            self.discard()
            raise PluginError(f"{self.label} exited in {what} (status {exc.code})") from None
        except WasmtimeError as exc:
            note = self._memory_note()
            self.discard()
            if self.memory_cap.refused is not None:
                raise PluginError(self._over_memory(what, f"then failed: {gist(exc)}")) from None
            raise PluginError(f"{self.label} failed in {what}: {gist(exc)}{note}") from None
        finally:
            WATCHDOG.disarm(token)

    def _memory_note(self) -> str:
        if self._store is None or self._memory is None:
            return f" (memory limit max_memory_mb={self.limits.max_memory_mb})"
        return ""

    def _over_memory(self, what: str, then: str) -> str:
        """The error for a call during which the memory cap refused a growth."""
        wanted = self.memory_cap.refused or 0
        return (
            f"{self.label} exceeded its memory limit (max_memory_mb="
            f"{self.limits.max_memory_mb}) in {what}: its memory was refused growth "
            f"to {wanted / MIB:.1f} MiB, and it {then}"
        )

    def _call_json(self, export: str, payload: bytes | None) -> bytes | None:
        store, memory = self._store, self._memory
        assert store is not None
        assert memory is not None
        func = self._exports[export]
        if payload is None:
            packed = func(store)
        else:
            ptr = self._alloc(store, memory, len(payload))
            if payload:
                memory.write(store, payload, ptr)
            packed = func(store, ptr, len(payload))
            if (dealloc := self._exports.get("dealloc")) is not None:
                dealloc(store, ptr, len(payload))
        packed = int(packed) & 0xFFFF_FFFF_FFFF_FFFF
        ptr, length = packed >> 32, packed & 0xFFFF_FFFF
        if length == 0:
            return None
        if length > MAX_RESULT_BYTES:
            raise PluginError(
                f"{self.label}: {export} returned {length} bytes, more than the "
                f"{MAX_RESULT_BYTES} a result may have"
            )
        if ptr + length > memory.data_len(store):
            raise PluginError(
                f"{self.label}: {export} returned a result outside its memory "
                f"(ptr={ptr}, len={length})"
            )
        return bytes(memory.read(store, ptr, ptr + length))

    def _alloc(self, store: Store, memory: Memory, length: int) -> int:
        ptr = int(self._exports["alloc"](store, length)) & 0xFFFF_FFFF
        if ptr == 0 or ptr + length > memory.data_len(store):
            raise PluginError(
                f"{self.label} could not allocate {length} bytes for its input "
                f"(memory limit max_memory_mb={self.limits.max_memory_mb})"
            )
        return ptr

    def host_log(self, caller: Caller, ptr: int, length: int) -> None:
        """``musicfs.log(ptr, len)``: log a message from the guest."""
        self._logs += 1
        if self._logs > MAX_LOGS_PER_CALL:
            return
        memory = caller.get("memory")
        if not isinstance(memory, Memory):
            return
        ptr &= 0xFFFF_FFFF
        length = min(length & 0xFFFF_FFFF, MAX_LOG_BYTES)
        data = memory.read(caller, ptr, min(ptr + length, memory.data_len(caller)))
        log.info("%s: %s", self.label, data.decode("utf-8", "replace"))
