"""WASM guests' linear memories, allocated by the host so it sees a refused grow.

wasmtime's store limits make a ``memory.grow`` past ``max_memory_mb`` return
-1 and record nothing. A real guest (Rust, C) then aborts in its allocator
with ``unreachable``, far below the limit when it asked for a large block, and
the host could only report "unreachable instruction executed". So an engine
built from a config given to `install_memory_creator` gets its linear memories
from here (wasmtime's host memory creator): each is an anonymous mapping of the
size and guard region wasmtime asks for, inaccessible beyond the guest's
current size, and every growth past the cap is refused *and recorded* in the
engine's `MemoryCap`, which `musicfs.plugins.wasm` reads when a call traps.

The cap is enforced here, not by the store limiter: the limiter would refuse
the grow before this code ever saw it.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
from typing import Any

from wasmtime import Config
from wasmtime import _bindings as ffi

__all__ = ["MemoryCap", "install_memory_creator"]

_PROT_NONE = 0
_PROT_READ_WRITE = mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
_PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                  ctypes.c_long]  # fmt: skip
_mprotect = _libc.mprotect
_mprotect.restype = ctypes.c_int
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


class MemoryCap:
    """The linear-memory cap of one engine, and the last growth it refused."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        #: Bytes the guest's memory would have had after the last refused
        #: ``memory.grow`` (or initial size); reset by the host before each call.
        self.refused: int | None = None


class _LinearMemory:
    def __init__(self, base: int, mapped: int, capacity: int, size: int, cap: MemoryCap) -> None:
        self.base = base
        self.mapped = mapped  # reservation and guard region: what munmap frees
        self.capacity = capacity  # how far it may grow in place (wasmtime's reservation)
        self.size = size
        self.cap = cap


# The C side holds plain integers (env); these map them to the Python objects.
_caps: dict[int, MemoryCap] = {}
_memories: dict[int, _LinearMemory] = {}
_keys = itertools.count(1)


def _error(message: str) -> int:
    """A new wasmtime error (owned by wasmtime once returned), as an address."""
    error = ffi.wasmtime_error_new(message.encode())
    address: int = ctypes.cast(error, ctypes.c_void_p).value or 0
    return address


def _round_up(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


def _get_memory(env: int, byte_size: Any, byte_capacity: Any) -> int:
    memory = _memories[env]
    byte_size[0] = memory.size
    byte_capacity[0] = memory.capacity
    return memory.base


def _grow_memory(env: int, new_size: int) -> int:
    # Never raise here: ctypes would print it and return 0, i.e. "grown".
    try:
        memory = _memories[env]
        if new_size > memory.cap.limit or new_size > memory.capacity:
            memory.cap.refused = new_size
            return _error(f"linear memory of {new_size} bytes is over the limit")
        if _mprotect(memory.base, _round_up(new_size), _PROT_READ_WRITE) != 0:
            return _error(f"cannot grow linear memory: errno {ctypes.get_errno()}")
        memory.size = new_size
        return 0
    except BaseException as exc:  # reported to wasmtime as the grow's error
        return _error(f"cannot grow linear memory: {exc}")


_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _free_memory(env: int) -> None:
    memory = _memories.pop(env, None)
    if memory is not None:
        _munmap(memory.base, memory.mapped)


def _forget_cap(env: int) -> None:
    _caps.pop(env, None)


def _new_memory(env: int, request_ptr: Any, memory_ptr: Any) -> int:
    try:
        cap = _caps[env]
        request = request_ptr[0]
        if request.minimum > cap.limit:
            cap.refused = request.minimum
            return _error(f"initial linear memory of {request.minimum} bytes is over the limit")
        # Reserve what wasmtime asked for (its compiled code may skip bounds
        # checks within the reservation and guard), all inaccessible for now.
        capacity = max(request.reserved_size_in_bytes, _round_up(cap.limit))
        mapped = capacity + request.guard_size_in_bytes
        base = _mmap(None, mapped, _PROT_NONE, _MAP_FLAGS, -1, 0)
        if base is None or base == _MAP_FAILED:
            return _error(f"cannot reserve linear memory: errno {ctypes.get_errno()}")
        size = request.minimum
        if size and _mprotect(base, _round_up(size), _PROT_READ_WRITE) != 0:
            _munmap(base, mapped)
            return _error(f"cannot map linear memory: errno {ctypes.get_errno()}")
        key = next(_keys)
        _memories[key] = _LinearMemory(base, mapped, capacity, size, cap)
        memory = memory_ptr[0]
        memory.env = key
        memory.get_memory = _GET_MEMORY
        memory.grow_memory = _GROW_MEMORY
        memory.finalizer = _FREE_MEMORY
        return 0
    except BaseException as exc:  # reported to wasmtime as the error
        return _error(f"cannot create linear memory: {exc}")


# C function pointers to the functions above, alive as long as the process.
_GET_MEMORY = ffi.wasmtime_memory_get_callback_t(_get_memory)
_GROW_MEMORY = ffi.wasmtime_memory_grow_callback_t(_grow_memory)
_FREE_MEMORY = _Finalizer(_free_memory)
_FORGET_CAP = _Finalizer(_forget_cap)
_NEW_MEMORY = ffi.wasmtime_new_memory_callback_t(_new_memory)


def install_memory_creator(config: Config, cap: MemoryCap) -> None:
    """Give every linear memory of the engine built from *config* to this module,
    capped at ``cap.limit`` bytes, refusals recorded in *cap*."""
    key = next(_keys)
    _caps[key] = cap
    creator: Any = ffi.wasmtime_memory_creator_t()
    creator.env = key
    creator.new_memory = _NEW_MEMORY
    creator.finalizer = _FORGET_CAP  # when the engine is freed
    ffi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(creator))
