"""`SnapshotWriter` that encodes a snapshot in a forked child process, so the
replica's event loop goes on (renewing its lease, answering heartbeats) while
the state is encoded, hashed and compressed; and `computed_in_child`, the same
for any pure computation over the state (the replica's state hash).

`fork()` gives the child a copy-on-write image of the parent at that instant:
the child sees the state exactly as it was when `write` was called, whatever
the parent does afterwards, without copying it. The child runs `capture` (the
pure core's encode + SHA-256) and `encode` (the store's object format: zstd),
writes one frame to a pipe and leaves with `os._exit`; the parent reads the
pipe from its event loop, waits for the child's exit through a pidfd, reaps
it, checks the frame and uploads the object. What the loop still pays is the
`fork()` itself: copying the page tables of the parent's memory (recorded as
the `snapshot` loop block).

A child that fails (an exception, a signal, a garbled frame) or outlives
`timeout_ms` (it is then killed) costs one skipped snapshot: `write` raises
`SnapshotNotTaken`, the follower tries again later. The child is always
reaped, also when the caller is cancelled, and the pipe's and pidfd's file
descriptors are always closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import gc
import logging
import os
import signal
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, Protocol

from ironbook.replication.interfaces import ReplicationError, Snapshot, SnapshotInfo
from ironbook.replication.loop_blocks import LoopBlocks

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 120_000
"""A 560,000-bet state took about 2 s to encode here: the bound leaves room
for a state many times that on a loaded machine."""
FRAME_MAGIC = b"IBSF"
_HEADER = struct.Struct("<4sQQ")
"""magic, the snapshot's sequence, the object's length in bytes."""
_PIPE_BYTES = 1 << 20
"""The pipe's buffer (Linux's default is 64 KiB): fewer, bigger reads."""
_SIGNALS_HANDLED_IN_PYTHON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
"""Loaded here, not in the child: loading takes the dynamic loader's lock."""


class ChildFailed(ReplicationError):
    """The child failed, was killed or timed out: it computed nothing."""


class SnapshotNotTaken(ChildFailed):
    """The child failed, was killed, or produced no valid frame: no snapshot
    was stored this time."""


class SnapshotObjects(Protocol):
    """A snapshot store that takes an object encoded elsewhere (by `encode`)."""

    async def put_object(self, seq: int, data: bytes) -> int:
        """Store the object as the snapshot at `seq`; returns its size."""
        ...


@dataclass(frozen=True, slots=True)
class ChildRun:
    """What one snapshot child cost."""

    fork_ms: float
    """The parent's `fork()` call: its event loop was held this long."""
    child_ms: float
    """From the fork to the child's exit, as the parent saw it."""
    child_cpu_ms: float
    """The child's user + system CPU time."""
    object_bytes: int


class ForkedSnapshotWriter:
    """One child at a time; `write` is called by one follower at a time."""

    def __init__(
        self,
        store: SnapshotObjects,
        *,
        encode: Callable[[Snapshot], bytes],
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        """`encode`: the store's object format (pure CPU); the stored bytes are
        `encode(capture())`, as an in-process `SnapshotStore.put` stores them."""
        assert timeout_ms > 0
        self._store = store
        self._encode = encode
        self._timeout_s = timeout_ms / 1000
        self.child_pid: int | None = None
        """The running child's process id (None between snapshots)."""
        self.last_run: ChildRun | None = None
        """The last child that produced a snapshot."""

    async def write(self, capture: Callable[[], Snapshot], loop_blocks: LoopBlocks) -> SnapshotInfo:
        if self.child_pid is not None:
            raise SnapshotNotTaken(f"snapshot child {self.child_pid} is still running")
        started = time.perf_counter()
        encode = self._encode

        def framed() -> bytes:
            snapshot = capture()
            return frame(snapshot.seq, encode(snapshot))

        try:
            pid, read_fd = _fork_child(framed)
        except ChildFailed as err:
            raise SnapshotNotTaken(f"snapshot: {err}") from err
        fork_ms = (time.perf_counter() - started) * 1000
        loop_blocks.record("snapshot", round(fork_ms))
        self.child_pid = pid
        try:
            output, child_cpu_ms = await _await_child(pid, read_fd, self._timeout_s, "snapshot")
        except ChildFailed as err:
            raise SnapshotNotTaken(str(err)) from err
        finally:
            self.child_pid = None
        child_ms = (time.perf_counter() - started) * 1000
        try:
            seq, data = parse_frame(output)
        except ValueError as err:
            log.warning(
                "snapshot child %d wrote a bad frame (%s); the snapshot is skipped", pid, err
            )
            raise SnapshotNotTaken(f"snapshot child {pid}: {err}") from err
        stored_bytes = await self._store.put_object(seq, data)
        self.last_run = ChildRun(fork_ms, child_ms, child_cpu_ms, len(data))
        return SnapshotInfo(seq, stored_bytes)


async def computed_in_child(
    compute: Callable[[], bytes], *, what: str, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> bytes:
    """`compute()` (pure CPU over the caller's state, as it is now: the fork
    happens before this first suspends), run in a forked child while the
    caller's event loop goes on. Raises `ChildFailed` when the child fails,
    is killed or outlives `timeout_ms`; `what` names it in logs and errors."""
    pid, read_fd = _fork_child(compute)
    output, _cpu_ms = await _await_child(pid, read_fd, timeout_ms / 1000, what)
    return output


async def _await_child(pid: int, read_fd: int, timeout_s: float, what: str) -> tuple[bytes, float]:
    """The child's output and CPU milliseconds, once it has exited with
    status 0 (else `ChildFailed`). The child is reaped and `read_fd`
    closed whatever happens, also when the caller is cancelled."""
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(os.close, read_fd)
        reaped = False

        def reap_unless_reaped() -> None:
            if not reaped:
                _kill_and_reap(pid)

        cleanup.callback(reap_unless_reaped)
        try:
            pidfd = os.pidfd_open(pid)
            cleanup.callback(os.close, pidfd)
            async with asyncio.timeout(timeout_s):
                output = await _read_to_end(loop, read_fd)
                await _readable(loop, pidfd)
            status, cpu_ms = _reap_exited(pid)
            reaped = True
        except TimeoutError:
            log.warning("%s child %d still running after %.0f s: killed", what, pid, timeout_s)
            raise ChildFailed(f"{what} child {pid} timed out") from None
        except OSError as err:
            # No pidfd (a kernel before 5.3), a pipe error, or the child
            # reaped by someone else (SIGCHLD ignored): no result.
            log.warning("%s child %d: %r", what, pid, err)
            raise ChildFailed(f"{what} child {pid}: {err!r}") from err
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0:
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit status {exit_code}"
        log.warning("%s child %d failed (%s)", what, pid, how)
        raise ChildFailed(f"{what} child {pid}: {how}")
    return output, cpu_ms


def _fork_child(compute: Callable[[], bytes]) -> tuple[int, int]:
    """Fork a child that writes `compute()` to a pipe: its pid and the pipe's
    read end."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    try:
        with _python_signals_blocked():
            # fork() is synchronous: nothing else runs on the event loop until
            # it returns, so the child's copy of the state is the state as the
            # caller last saw it, and the parent may change it as soon as we
            # return.
            parent_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                _child(parent_pid, write_fd, compute)
    except OSError as err:
        os.close(read_fd)
        raise ChildFailed(f"cannot fork a child: {err}") from err
    finally:
        os.close(write_fd)
    return pid, read_fd


def frame(seq: int, data: bytes) -> bytes:
    """What a child writes: a header, then the object."""
    return _HEADER.pack(FRAME_MAGIC, seq, len(data)) + data


def parse_frame(output: bytes) -> tuple[int, bytes]:
    """(seq, object) from a child's whole output; ValueError unless it is
    exactly one frame."""
    if len(output) < _HEADER.size:
        raise ValueError(f"{len(output)} bytes, shorter than a frame header")
    magic, seq, length = _HEADER.unpack_from(output)
    if magic != FRAME_MAGIC:
        raise ValueError(f"frame starts with {magic!r}")
    if len(output) != _HEADER.size + length:
        raise ValueError(f"frame announces {length} bytes, carries {len(output) - _HEADER.size}")
    return seq, output[_HEADER.size :]


def _child(
    parent_pid: int,
    write_fd: int,
    compute: Callable[[], bytes],
) -> NoReturn:
    """The forked child: pure computation, one write to its pipe, `os._exit`.

    It never returns into the parent's code: no asyncio, no NATS, no logging
    handlers, no atexit handlers run here. The parent has other threads
    (the loop's default executor, uvloop's); fork() copies only the calling
    thread, so a lock another thread held at the fork stays held forever in
    the child. That is safe here because the child takes no lock it did not
    create: msgspec and zstandard keep no global locks, the SHA-256 object is
    new, every thread that could be inside OpenSSL at the fork is this one
    (TLS and hashing run on the event loop's thread), and glibc's malloc
    resets its own locks across fork(). Python's own (the GIL, the import
    lock) are reset by `os.fork`.
    """
    exit_code = 1
    try:
        # Die with the parent (kill -9 of a replica): an orphan would go on
        # encoding for nobody.
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            raise ChildProcessError("the parent died before the line above")
        # Hold none of the parent's sockets and files open (a listening port
        # a restarted replica wants back, a connection the parent closes).
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
        # The parent's asyncio signal handlers write to its wake-up socket,
        # which this process shares: a SIGTERM to the child must kill the
        # child, not look like one to the parent.
        signal.set_wakeup_fd(-1)
        for signum in _SIGNALS_HANDLED_IN_PYTHON:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS_HANDLED_IN_PYTHON)
        # A collection would walk (and write to) every object's header: pages
        # copied for nothing in a process that lives for one snapshot.
        gc.disable()
        output = memoryview(compute())
        while output:
            output = output[os.write(write_fd, output) :]
        exit_code = 0
    finally:
        os._exit(exit_code)


@contextlib.contextmanager
def _python_signals_blocked() -> Iterator[None]:
    """Signals that arrive during the fork wait for the parent's unblock (or
    die with the child, once it has restored their default action)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS_HANDLED_IN_PYTHON)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def _read_to_end(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """Everything written to the pipe until its write end is closed."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, _PIPE_BYTES)
        except BlockingIOError:
            await _readable(loop, fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _reap_exited(pid: int) -> tuple[int, float]:
    """The wait status and CPU milliseconds of a child whose pidfd has become
    readable: it has exited, so this does not block."""
    reaped_pid, status, usage = os.wait4(pid, os.WNOHANG)
    assert reaped_pid == pid, "a readable pidfd is an exited child"
    return status, (usage.ru_utime + usage.ru_stime) * 1000


def _kill_and_reap(pid: int) -> None:
    """Blocks only while a SIGKILLed child exits (no cleanup code runs)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
