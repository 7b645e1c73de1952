"""Snapshots encoded in a forked child (`adapters.forked_snapshots`), with
real forks: the stored object is byte for byte what the in-process path
stores, the child sees the state as of the fork whatever the parent applies
afterwards, and a child that dies, hangs, is cancelled or writes a bad frame
costs one skipped snapshot, leaving no zombie and no open file descriptor.
Each test runs on the standard asyncio loop and on uvloop (the replica's)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from ironbook import core
from ironbook.adapters.forked_snapshots import (
    ForkedSnapshotWriter,
    SnapshotNotTaken,
    frame,
    parse_frame,
)
from ironbook.adapters.nats.snapshots import decode_object, encode_object
from ironbook.adapters.procfs import process_stat
from ironbook.core import acting, issued
from ironbook.replication.batch import ReplayState, encode_batch
from ironbook.replication.follower import InProcessSnapshotWriter, take_snapshot
from ironbook.replication.interfaces import LogEntry, Snapshot, SnapshotInfo
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.tree_keeping import LogTree

T = TypeVar("T")
PEOPLE = acting("test")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: dict[str, Runner] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param]


class Objects:
    """The store's side of a forked write: the objects as uploaded."""

    def __init__(self) -> None:
        self.objects: dict[int, bytes] = {}

    async def put_object(self, seq: int, data: bytes) -> int:
        self.objects[seq] = data
        return len(data)


class PlainStore:
    """An in-process `SnapshotStore.put` storing what the NATS store would."""

    def __init__(self) -> None:
        self.objects: dict[int, bytes] = {}

    async def put(self, snapshot: Snapshot) -> int:
        data = encode_object(snapshot)
        self.objects[snapshot.seq] = data
        return len(data)


def _entries(first_seq: int, count: int, previous_batch_id: str) -> list[LogEntry]:
    """Each entry opens an account and deposits into it."""
    state = core.new_state()
    entries, previous = [], previous_batch_id
    for seq in range(first_seq, first_seq + count):
        events: list[core.AnyEvent] = []
        for command in (
            core.OpenAccount(request_id=f"open-{seq}", account_id=f"acct-{seq}"),
            core.Deposit(
                request_id=f"dep-{seq}", account_id=f"acct-{seq}", amount_minor=seq, reason="t"
            ),
        ):
            outcome = core.decide(state, issued(command, PEOPLE), seq)
            assert isinstance(outcome, core.Accepted), outcome
            for event in outcome.events:
                core.apply(state, event)
            events.extend(outcome.events)
        batch_id = f"1:{seq}"
        entries.append(LogEntry(seq, batch_id, encode_batch(previous, events)))
        previous = batch_id
    return entries


def _replay(entries: list[LogEntry]) -> tuple[ReplayState, LogTree]:
    replay = ReplayState.empty(None, verifier=None)
    tree = LogTree(0)
    for entry in entries:
        replay.apply(entry)
        tree.add(entry.seq, entry.payload)
    return replay, tree


def _pipes_and_pidfds() -> set[tuple[str, str]]:
    """This process's open pipes and pidfds (what a write opens), by
    descriptor. (uvloop opens a /dev/null descriptor of its own on first use.)"""
    fds = Path("/proc/self/fd")
    links = {}
    for fd in fds.iterdir():
        with contextlib.suppress(FileNotFoundError):
            links[fd.name] = os.readlink(fd)
    return {(fd, link) for fd, link in links.items() if "pipe" in link or "pidfd" in link}


async def _leaving_no_fd(awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, checking that it closed every pipe and pidfd it
    opened (measured inside the loop: a loop has descriptors of its own)."""
    before = _pipes_and_pidfds()
    try:
        return await awaitable
    finally:
        assert _pipes_and_pidfds() == before


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists()


def _writing_pid_then(pid_file: Path, then: Callable[[], object]) -> Callable[[], Snapshot]:
    """A capture that records the child's pid, then does `then` (in the child)."""

    def capture() -> Snapshot:
        pid_file.write_text(str(os.getpid()))
        then()
        raise AssertionError("unreachable in these tests")

    return capture


def test_stores_the_bytes_the_in_process_writer_stores(
    run: Runner,
) -> None:
    replay, tree = _replay(_entries(1, 50, ""))
    capture = functools.partial(take_snapshot, replay, tree)
    objects, plain = Objects(), PlainStore()
    forked = ForkedSnapshotWriter(objects, encode=encode_object)
    in_process_writer = InProcessSnapshotWriter(plain, _Clock())  # type: ignore[arg-type]

    async def both() -> tuple[SnapshotInfo, SnapshotInfo]:
        in_process = await in_process_writer.write(capture, LoopBlocks())
        blocks = LoopBlocks()
        written = await _leaving_no_fd(forked.write(capture, blocks))
        assert "snapshot" in blocks.longest_ms()
        return in_process, written

    in_process, written = run(both())
    assert written == in_process == SnapshotInfo(50, len(plain.objects[50]))
    assert objects.objects[50] == plain.objects[50]
    snapshot = decode_object(objects.objects[50])
    assert snapshot.tree_nodes == list(tree.frontier.nodes)
    assert snapshot.state_hash == core.state_hash(replay.state)
    assert forked.child_pid is None
    assert forked.last_run is not None and forked.last_run.object_bytes == len(objects.objects[50])


def test_the_child_sees_the_state_as_of_the_fork(
    run: Runner,
) -> None:
    entries = _entries(1, 60, "")
    replay, tree = _replay(entries[:40])
    expected = encode_object(take_snapshot(replay, tree))
    objects = Objects()
    forked = ForkedSnapshotWriter(objects, encode=encode_object)

    async def write_while_applying() -> SnapshotInfo:
        async with asyncio.TaskGroup() as tasks:
            writing = tasks.create_task(
                forked.write(functools.partial(take_snapshot, replay, tree), LoopBlocks())
            )
            await asyncio.sleep(0)  # the write has forked
            assert forked.child_pid is not None
            for entry in entries[40:]:
                replay.apply(entry)
                tree.add(entry.seq, entry.payload)
        return writing.result()

    assert run(write_while_applying()) == SnapshotInfo(40, len(expected))
    assert replay.applied_seq == 60
    assert objects.objects[40] == expected


@pytest.mark.parametrize(
    "death",
    [
        pytest.param(lambda: os.kill(os.getpid(), signal.SIGKILL), id="killed"),
        pytest.param(lambda: 1 / 0, id="raises"),
        pytest.param(lambda: os._exit(0), id="exits-without-a-frame"),
    ],
)
def test_a_child_that_dies_skips_the_snapshot_and_is_reaped(
    run: Runner, death: Callable[[], object], tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    objects = Objects()
    forked = ForkedSnapshotWriter(objects, encode=encode_object)
    with pytest.raises(SnapshotNotTaken):
        run(_leaving_no_fd(forked.write(_writing_pid_then(pid_file, death), LoopBlocks())))
    _assert_reaped(int(pid_file.read_text()))
    assert objects.objects == {}
    assert forked.child_pid is None


def test_a_child_past_its_timeout_is_killed_and_reaped(run: Runner) -> None:
    forked = ForkedSnapshotWriter(Objects(), encode=encode_object, timeout_ms=300)
    capture = functools.partial(time.sleep, 60)
    children: list[int | None] = []

    async def write_past_the_timeout() -> None:
        async def note_the_child() -> None:
            children.append(forked.child_pid)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(note_the_child())  # runs once the write has forked
            with pytest.raises(SnapshotNotTaken, match="timed out"):
                await forked.write(capture, LoopBlocks())  # type: ignore[arg-type]

    started = time.monotonic()
    run(_leaving_no_fd(write_past_the_timeout()))
    assert time.monotonic() - started < 30
    (child,) = children
    assert child is not None
    _assert_reaped(child)


def test_a_cancelled_write_kills_and_reaps_its_child(
    run: Runner,
) -> None:
    forked = ForkedSnapshotWriter(Objects(), encode=encode_object)
    capture = functools.partial(time.sleep, 60)
    children: list[int] = []

    async def cancel_while_running() -> None:
        async with asyncio.TaskGroup() as tasks:
            writing = tasks.create_task(forked.write(capture, LoopBlocks()))  # type: ignore[arg-type]
            await asyncio.sleep(0)  # the write has forked
            assert forked.child_pid is not None
            children.append(forked.child_pid)
            # Only one child at a time.
            with pytest.raises(SnapshotNotTaken, match="still running"):
                await forked.write(capture, LoopBlocks())  # type: ignore[arg-type]
            writing.cancel()
        assert writing.cancelled()

    run(_leaving_no_fd(cancel_while_running()))
    _assert_reaped(children[0])
    assert forked.child_pid is None


def test_a_signal_to_the_child_does_not_reach_the_parents_handlers(
    run: Runner, tmp_path: Path
) -> None:
    """The parent's loop handles SIGTERM (through a wake-up fd the child
    inherits); the child must die of it, and the parent must not hear it."""
    pid_file = tmp_path / "pid"
    forked = ForkedSnapshotWriter(Objects(), encode=encode_object)
    heard: list[int] = []

    def sigterm_self() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

    async def with_a_sigterm_handler() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, heard.append, signal.SIGTERM)
        try:
            with pytest.raises(SnapshotNotTaken, match=f"signal {int(signal.SIGTERM)}"):
                await forked.write(_writing_pid_then(pid_file, sigterm_self), LoopBlocks())
            await asyncio.sleep(0.1)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    run(with_a_sigterm_handler())
    assert heard == []
    _assert_reaped(int(pid_file.read_text()))


def test_a_child_reaped_by_someone_else_skips_the_snapshot(run: Runner) -> None:
    """With SIGCHLD ignored the kernel reaps children itself: the exit status
    is lost, so the snapshot is skipped rather than trusted (or crashing)."""
    replay, tree = _replay(_entries(1, 3, ""))
    forked = ForkedSnapshotWriter(Objects(), encode=encode_object)
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with pytest.raises(SnapshotNotTaken, match="ChildProcessError"):
            run(forked.write(functools.partial(take_snapshot, replay, tree), LoopBlocks()))
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert forked.child_pid is None


_PARENT_SCRIPT = """
import asyncio, time
from ironbook.adapters.forked_snapshots import ForkedSnapshotWriter
from ironbook.replication.loop_blocks import LoopBlocks

class Objects:
    async def put_object(self, seq, data):
        return len(data)

async def main():
    writer = ForkedSnapshotWriter(Objects(), encode=bytes)

    async def report_child():
        print(writer.child_pid, flush=True)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(report_child())
        await writer.write(lambda: time.sleep(60), LoopBlocks())

asyncio.run(main())
"""


def test_the_child_dies_with_its_parent() -> None:
    """kill -9 of the replica leaves no orphan encoding for nobody."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert (stat := process_stat(child_pid)) is not None and stat.ppid == parent.pid
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while (stat := process_stat(child_pid)) is not None and stat.state != "Z":
        assert time.monotonic() < deadline, f"the child outlived its parent: {stat}"
        time.sleep(0.05)


def test_only_a_whole_frame_is_accepted() -> None:
    data = b"object bytes"
    whole = frame(7, data)
    assert parse_frame(whole) == (7, data)
    for garbage in (b"", whole[:10], whole[:-1], whole + b"x", b"XXXX" + whole[4:]):
        with pytest.raises(ValueError):
            parse_frame(garbage)


class _Clock:
    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(ms / 1000)
