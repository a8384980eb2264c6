"""A fault-injecting, read-only passthrough FUSE filesystem: the tests' stand-in for NFS.

``python -m tests.servers.faultfs SOURCE MOUNTPOINT CONTROL_SOCKET`` mirrors the
folder SOURCE read-only at MOUNTPOINT (lookup, getattr, readdir, open, read,
release, statfs; pyfuse3 + trio, as the product). Nothing is cached by the
kernel: entries and attributes time out at once and files are opened with
``direct_io``, so every operation of a reader reaches this process, and a fault
switched on applies to the very next call.

Faults are switched at run time over a Unix socket (CONTROL_SOCKET), one JSON
line per connection; the reply is sent only once the change is in force, so a
test that gets its answer knows every later operation sees it:

- ``eio``: every operation answers EIO (a share that stopped answering);
- ``eio_paths``: operations on these paths (relative, ``/``-separated) answer
  EIO, while the folders holding them still list (a share that half answers);
- ``delay``: every operation waits this many seconds before answering (a hung
  share); a change of faults that lowers it to 0 releases the waiting ones;
- ``stale_handles``: switching it on makes every file handle open *now* stale:
  reads on it answer ESTALE for good, while new opens work (what an NFS server
  restart does to its clients).

`fault_fs` runs the filesystem in its own process (a hang there never hangs
pytest, and the process dies with its parent), waits until the mount answers,
and always unmounts and stops it on exit, also when the test fails. The
yielded `FaultFS` switches faults (`FaultFS.set`, `FaultFS.clear`) and reads
the counts of faults answered (`FaultFS.stats`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import itertools
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import trio

log = logging.getLogger("faultfs")

REPO_ROOT = Path(__file__).resolve().parents[2]
FSNAME = "faultfs"
START_TIMEOUT = 30.0  # seconds for the process to mount and answer
STOP_TIMEOUT = 10.0  # seconds for each step of stopping it
LAZY_TIMEOUT = 1.0  # seconds for it to end after a lazy unmount, before it is killed
CONTROL_TIMEOUT = 10.0  # seconds for one control request
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_PR_SET_PDEATHSIG = 1


# -- the filesystem (runs in the child process) -----------------------------------------


@dataclass
class Faults:
    """The faults in force."""

    eio: bool = False
    eio_paths: frozenset[str] = frozenset()
    delay: float = 0.0
    stale_handles: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"eio": self.eio, "eio_paths": sorted(self.eio_paths), "delay": self.delay,
                "stale_handles": self.stale_handles}  # fmt: skip


@dataclass
class _Handle:
    """An open file: its descriptor on the source, and whether it went stale."""

    fd: int
    relpath: str
    stale: bool = False


class FaultOperations(pyfuse3.Operations):
    """pyfuse3 handlers mirroring *source* read-only, with the faults in `faults`."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, source: Path) -> None:
        super().__init__()
        self.source = source
        self.faults = Faults()
        self.generation = 0  # how many control changes were applied
        self.counts: Counter[str] = Counter()
        self._changed = trio.Event()  # set (and replaced) whenever the faults change
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        self._inodes: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._files: dict[int, _Handle] = {}
        self._next_fh = itertools.count(1)

    # -- faults ---------------------------------------------------------------------

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one control request (trio thread); the reply says what is in force."""
        op = request.get("op")
        if op in ("set", "clear"):
            changes = request.get("faults", {}) if op == "set" else {}
            new = self._merged(changes) if op == "set" else Faults()
            if changes.get("stale_handles"):  # switched on: what is open now goes stale
                for handle in self._files.values():
                    handle.stale = True
            self.faults = new
            self.generation += 1
            self._changed.set()
            self._changed = trio.Event()
            log.info("faults now %s (generation %d)", new.as_dict(), self.generation)
        elif op not in ("get", "ping"):
            raise ValueError(f"unknown op {op!r}")
        return {"ok": True, "generation": self.generation, "faults": self.faults.as_dict(),
                "counts": dict(self.counts), "open_files": len(self._files)}  # fmt: skip

    def _merged(self, changes: dict[str, Any]) -> Faults:
        unknown = set(changes) - {"eio", "eio_paths", "delay", "stale_handles"}
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        faults = self.faults
        return Faults(
            eio=bool(changes.get("eio", faults.eio)),
            eio_paths=frozenset(map(str, changes.get("eio_paths", faults.eio_paths))),
            delay=float(changes.get("delay", faults.delay)),
            stale_handles=bool(changes.get("stale_handles", faults.stale_handles)),
        )

    async def _fault(self, relpath: str | None, handle: _Handle | None = None) -> None:
        """Wait and fail as the faults in force say, for one operation on *relpath*."""
        self.counts["ops"] += 1
        delay = self.faults.delay
        if delay > 0:
            self.counts["delayed"] += 1
            deadline = trio.current_time() + delay
            while self.faults.delay > 0 and trio.current_time() < deadline:
                with trio.move_on_at(deadline):
                    await self._changed.wait()
        if self.faults.eio or (relpath is not None and relpath in self.faults.eio_paths):
            self.counts["eio"] += 1
            raise pyfuse3.FUSEError(errno.EIO)
        if handle is not None and handle.stale:
            self.counts["estale"] += 1
            raise pyfuse3.FUSEError(errno.ESTALE)

    # -- names and attributes ---------------------------------------------------------

    def _relpath(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _inode(self, relpath: str) -> int:
        inode = self._inodes.get(relpath)
        if inode is None:
            inode = self._inodes[relpath] = next(self._next_inode)
            self._paths[inode] = relpath
        return inode

    def _source(self, relpath: str) -> str:
        return os.path.join(self.source, relpath) if relpath else str(self.source)

    def _attr(self, relpath: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(self._source(relpath))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = self._inode(relpath)
        attr.entry_timeout = attr.attr_timeout = 0  # the kernel asks again every time
        attr.st_mode = st.st_mode
        attr.st_nlink = st.st_nlink
        attr.st_uid, attr.st_gid = st.st_uid, st.st_gid
        attr.st_size = st.st_size
        attr.st_blksize = st.st_blksize
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns, attr.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
        attr.st_ctime_ns = st.st_ctime_ns
        return attr

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._relpath(parent_inode)
        text = os.fsdecode(name)
        relpath = f"{parent}/{text}" if parent else text
        await self._fault(relpath)
        return self._attr(relpath)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        relpath = self._relpath(inode)
        await self._fault(relpath)
        return self._attr(relpath)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        relpath = self._relpath(inode)
        await self._fault(relpath)
        try:
            return os.fsencode(os.readlink(self._source(relpath)))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        relpath = self._relpath(inode)
        await self._fault(relpath)
        if not os.path.isdir(self._source(relpath)):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        relpath = self._relpath(fh)
        await self._fault(relpath)
        try:
            names = sorted(os.listdir(self._source(relpath)))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        for index in range(start_id, len(names)):
            child = f"{relpath}/{names[index]}" if relpath else names[index]
            try:
                attr = self._attr(child)
            except pyfuse3.FUSEError:  # vanished meanwhile
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(names[index]), attr, index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        await self._fault("")
        st = os.statvfs(self.source)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):  # fmt: skip
            setattr(data, name, getattr(st, name))
        return data

    # -- file contents ------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        relpath = self._relpath(inode)
        await self._fault(relpath)
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            fd = os.open(self._source(relpath), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        fh = next(self._next_fh)
        self._files[fh] = _Handle(fd, relpath)
        self.counts["opened"] += 1
        # direct_io: no page cache, so every read of the reader reaches _fault.
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        await self._fault(handle.relpath, handle)
        try:
            return os.pread(handle.fd, size, off)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            os.close(handle.fd)
            self.counts["released"] += 1

    # -- serving --------------------------------------------------------------------------

    async def serve(self, mountpoint: str, control: str) -> None:
        """Serve requests and the control socket; say READY once the mount answers."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve_control, control)
            nursery.start_soon(self._main_then_cancel, nursery)
            await trio.to_thread.run_sync(os.stat, mountpoint)  # returns once INIT is done
            sys.stdout.write("READY\n")
            sys.stdout.flush()

    async def _main_then_cancel(self, nursery: trio.Nursery) -> None:
        await pyfuse3.main()
        nursery.cancel_scope.cancel()  # unmounted: stop serving the control socket

    async def _serve_control(
        self, path: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(16)
        task_status.started()
        await trio.serve_listeners(self._control_connection, [trio.SocketListener(sock)])

    async def _control_connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            try:
                reply = self.control(json.loads(data))
            except (ValueError, TypeError, AttributeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            await stream.send_all(json.dumps(reply).encode() + b"\n")

    def close_all(self) -> None:
        for handle in self._files.values():
            os.close(handle.fd)
        self._files.clear()


def _die_with_parent() -> None:
    """Get SIGKILL when the process that started this one dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def mount_options() -> set[str]:
    """Mount options (see ENVIRONMENT.md: auto_unmount cleans up after a kill)."""
    return {f"fsname={FSNAME}", f"subtype={FSNAME}", "ro", "auto_unmount", "noatime"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.faultfs", description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("mountpoint")
    parser.add_argument("control", help="path of the Unix socket that switches faults")
    args = parser.parse_args(argv)
    _die_with_parent()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s faultfs %(levelname)s %(message)s")  # fmt: skip
    ops = FaultOperations(args.source.resolve())
    pyfuse3.init(ops, args.mountpoint, mount_options())
    try:
        trio.run(ops.serve, args.mountpoint, args.control)
    finally:
        ops.close_all()
        pyfuse3.close(unmount=True)
    return 0


# -- the test side ------------------------------------------------------------------------


class FaultFSError(RuntimeError):
    """The fault filesystem did not start, or did not answer a control request."""


def missing_fuse() -> str | None:
    """Why no FUSE filesystem can be mounted here, or None if one can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: FUSE mounts are not possible here"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    return None


def is_mounted(mountpoint: Path) -> bool:
    """Whether something is mounted on *mountpoint* (per /proc/self/mounts)."""
    target = str(mountpoint).replace("\\", "\\134").replace(" ", "\\040")
    target = target.replace("\t", "\\011").replace("\n", "\\012")
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as fh:
        return any(line.split()[1] == target for line in fh)


@dataclass
class FaultFS:
    """A running fault filesystem: *mountpoint* mirrors *source*."""

    source: Path
    mountpoint: Path
    control: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def set(
        self,
        *,
        eio: bool | None = None,
        eio_paths: Iterable[str] | None = None,
        delay: float | None = None,
        stale_handles: bool | None = None,
    ) -> dict[str, Any]:
        """Change the given faults (the others stay); returns once they are in force."""
        changes: dict[str, Any] = {}
        if eio is not None:
            changes["eio"] = eio
        if eio_paths is not None:
            changes["eio_paths"] = list(eio_paths)
        if delay is not None:
            changes["delay"] = delay
        if stale_handles is not None:
            changes["stale_handles"] = stale_handles
        return self.request({"op": "set", "faults": changes})

    def clear(self) -> dict[str, Any]:
        """No faults from now on (handles already stale stay stale)."""
        return self.request({"op": "clear"})

    def stats(self) -> Counter[str]:
        """How many operations came (``ops``), how many got each fault (``eio``,
        ``estale``, ``delayed``), and how many files were ``opened`` and ``released``."""
        return Counter(self.request({"op": "get"})["counts"])

    def open_files(self) -> int:
        """How many files are open on the share just now (opened and not released)."""
        return int(self.request({"op": "get"})["open_files"])

    def request(self, request: dict[str, Any], timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
        """Send one control request and return the reply (after it took effect)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.control))
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError as exc:
                raise FaultFSError(f"faultfs control {request}: {exc}\n{self.log()}") from None
        if not data:
            raise FaultFSError(f"faultfs closed the control connection\n{self.log()}")
        reply: dict[str, Any] = json.loads(data)
        if not reply.get("ok"):
            raise FaultFSError(f"faultfs refused {request}: {reply.get('error')}")
        return reply

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the process and wait until the mount answers and the control socket too."""
        with self.log_file.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.servers.faultfs",
                 str(self.source), str(self.mountpoint), str(self.control)],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )  # fmt: skip
        self._wait_ready()
        if not is_mounted(self.mountpoint):
            raise FaultFSError(f"faultfs said READY but {self.mountpoint} is not mounted")
        self.request({"op": "ping"})

    def _wait_ready(self) -> None:
        """Wait for the READY line the process prints once its mount answers."""
        process = self.process
        assert process is not None
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FaultFSError(f"faultfs not ready in {START_TIMEOUT} s:\n{self.log()}")
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    code = process.wait(STOP_TIMEOUT)
                    raise FaultFSError(f"faultfs exited with {code}:\n{self.log()}")
                line += chunk
        if line.strip() != b"READY":
            raise FaultFSError(f"faultfs said {line!r}:\n{self.log()}")

    def stop(self) -> None:
        """Unmount (``fusermount3 -u``, else ``-uz``) and end the process; never raises."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(FaultFSError, ValueError):
                self.request({"op": "clear"}, timeout=2.0)  # release delayed requests
        _fusermount(self.mountpoint, "-u")
        busy = is_mounted(self.mountpoint)  # a file still open on it
        _fusermount(self.mountpoint, "-uz")
        if process is None:
            return
        try:
            # Detached lazily, the process would serve the open files until they
            # close: do not wait for that.
            process.wait(LAZY_TIMEOUT if busy else STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _fusermount(self.mountpoint, "-uz")  # killed: auto_unmount should have done it
        if process.stdout is not None:
            process.stdout.close()


def _fusermount(mountpoint: Path, flags: str) -> None:
    if is_mounted(mountpoint):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(["fusermount3", flags, str(mountpoint)], capture_output=True,
                           timeout=STOP_TIMEOUT, check=False)  # fmt: skip


@contextlib.contextmanager
def fault_fs(source: Path, mountpoint: Path) -> Iterator[FaultFS]:
    """Mount a fault filesystem mirroring *source* on *mountpoint* until the block ends.

    Always unmounted and stopped on exit, also when the block (or the start) fails.
    """
    reason = missing_fuse()
    if reason is not None:
        raise FaultFSError(reason)
    mountpoint.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="musicfs-faultfs-") as tmp:
        workdir = Path(tmp)  # short: a Unix socket path has at most 107 bytes
        fs = FaultFS(Path(source), Path(mountpoint), workdir / "control.sock",
                     workdir / "faultfs.log")  # fmt: skip
        try:
            fs.start()
            yield fs
        finally:
            fs.stop()


if __name__ == "__main__":
    sys.exit(main())
