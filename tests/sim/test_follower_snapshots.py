"""When a follower writes snapshots: after `snapshot_every_entries` entries
and, with `snapshot_log_ratio`, once the log applied since the last snapshot
is that fraction of the snapshot's size (snapshots of a growing state get
rarer instead of costing more and more per entry)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Sequence

from ironbook import core
from ironbook.core import acting, issued
from ironbook.replication.batch import ReplayState, encode_batch
from ironbook.replication.follower import Follower, FollowerConfig, snapshot_stagger
from ironbook.replication.interfaces import LogEntry, Snapshot, SnapshotInfo, SnapshotUnavailable
from ironbook.replication.loop_blocks import LoopBlocks

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


ENTRIES = 400


class ListLog:
    def __init__(self, entries: list[LogEntry]) -> None:
        self.entries = entries

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        return self.entries[from_seq - 1 : from_seq - 1 + max_entries]


class Store:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    async def put(self, snapshot: Snapshot) -> int:
        self.snapshots.append(snapshot)
        return len(snapshot.state)

    async def latest_info(self) -> SnapshotInfo | None:
        if not self.snapshots:
            return None
        newest = max(self.snapshots, key=lambda s: s.seq)
        return SnapshotInfo(newest.seq, len(newest.state))


class NoClock:
    """Time stands still; a sleep only lets other tasks run."""

    def now_ms(self) -> int:
        return 0

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(0)


def _log_of_new_accounts(count: int) -> list[LogEntry]:
    """Each entry opens one account: the state grows with every entry."""
    state = core.new_state()
    entries, previous = [], ""
    for seq in range(1, count + 1):
        command = core.OpenAccount(request_id=f"open-{seq}", account_id=f"acct-{seq}")
        outcome = core.decide(state, issued(command, PEOPLE), seq)
        for event in outcome.events:
            core.apply(state, event)
        batch_id = f"1:{seq}"
        entries.append(LogEntry(seq, batch_id, encode_batch(previous, list(outcome.events))))
        previous = batch_id
    return entries


def _follower(config: FollowerConfig, entries: list[LogEntry], store: Store) -> Follower:
    return Follower(
        log=ListLog(entries),  # type: ignore[arg-type]
        snapshots=store,  # type: ignore[arg-type]
        clock=NoClock(),
        replay=ReplayState.empty(None, verifier=None),
        config=config,
    )


def _snapshots(
    config: FollowerConfig, entries: list[LogEntry], store: Store | None = None
) -> list[Snapshot]:
    store = store or Store()
    follower = _follower(config, entries, store)

    async def tail() -> None:
        while follower.applied_seq < len(entries):
            await follower.poll(wait_ms=0)

    asyncio.run(tail())
    return store.snapshots


def test_snapshots_by_entry_count_alone() -> None:
    entries = _log_of_new_accounts(ENTRIES)
    config = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0)
    assert [s.seq for s in _snapshots(config, entries)] == list(range(10, ENTRIES + 1, 10))


def test_snapshots_get_rarer_as_the_state_grows() -> None:
    entries = _log_of_new_accounts(ENTRIES)
    sizes = {entry.seq: len(entry.payload) for entry in entries}
    config = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0.5)
    snapshots = _snapshots(config, entries)
    assert snapshots and snapshots[0].seq == 10
    for before, after in itertools.pairwise(snapshots):
        assert after.seq - before.seq >= 10
        log_bytes = sum(sizes[seq] for seq in range(before.seq + 1, after.seq + 1))
        assert log_bytes >= 0.5 * len(before.state)
        # and not later than needed: one entry fewer would not have been enough
        assert log_bytes - sizes[after.seq] < 0.5 * len(before.state) or (
            after.seq - before.seq == 10
        )
    gaps = [after.seq - before.seq for before, after in itertools.pairwise(snapshots)]
    assert gaps[-1] > gaps[0], gaps
    assert len(snapshots) < ENTRIES // 10


def test_the_byte_rule_counts_the_size_the_store_reports() -> None:
    """A store that compresses reports fewer bytes than the state: the next
    snapshot is due after `snapshot_log_ratio` times that many log bytes."""

    class CompressingStore(Store):
        async def put(self, snapshot: Snapshot) -> int:
            self.snapshots.append(snapshot)
            return len(snapshot.state) // 4

    entries = _log_of_new_accounts(ENTRIES)
    sizes = {entry.seq: len(entry.payload) for entry in entries}
    config = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=2.0)
    snapshots = _snapshots(config, entries, CompressingStore())
    assert len(snapshots) >= 3
    for before, after in itertools.pairwise(snapshots):
        due_bytes = 2.0 * (len(before.state) // 4)
        log_bytes = sum(sizes[seq] for seq in range(before.seq + 1, after.seq + 1))
        assert log_bytes >= due_bytes
        assert log_bytes - sizes[after.seq] < due_bytes or after.seq - before.seq == 10


def test_a_staggered_follower_counts_from_the_others_snapshot_instead_of_writing_it_again() -> None:
    """Two followers tail the same log in step; the one with the higher
    stagger finds the other's snapshot in the store when its own is due."""
    entries = _log_of_new_accounts(ENTRIES)
    store = Store()
    base = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0.5)
    early = _follower(dataclasses.replace(base, snapshot_stagger=0.0), entries, store)
    late = _follower(dataclasses.replace(base, snapshot_stagger=0.3), entries, store)

    async def tail_in_step() -> None:
        while early.applied_seq < len(entries):
            await early.poll(wait_ms=0)
            await late.poll(wait_ms=0)

    asyncio.run(tail_in_step())
    alone = _snapshots(base, entries)
    assert [s.seq for s in store.snapshots] == [s.seq for s in alone]


def test_stagger_is_fixed_per_node_and_at_most_a_half() -> None:
    staggers = {node: snapshot_stagger(node) for node in ("p0-r1", "p0-r2", "p0-r3")}
    assert all(0 <= value <= 0.5 for value in staggers.values())
    assert len(set(staggers.values())) == 3
    assert staggers == {node: snapshot_stagger(node) for node in staggers}


class DownStore(Store):
    """A store that never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def latest_info(self) -> SnapshotInfo | None:
        self.asked += 1
        raise SnapshotUnavailable("down")


def test_an_unreachable_store_is_tried_again_only_every_so_many_entries() -> None:
    entries = _log_of_new_accounts(100)
    store = DownStore()
    config = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0)
    follower = _follower(config, entries, store)

    async def tail() -> None:
        while follower.applied_seq < len(entries):
            await follower.poll(wait_ms=0)

    asyncio.run(tail())
    # Due from entry 10 on: tried at 10, 20, ..., 100, not at every entry.
    assert store.asked == 10
    assert store.snapshots == []


def test_a_restarted_follower_learns_the_size_of_the_snapshot_it_started_from() -> None:
    """After a restart the byte rule applies to the snapshot restored from,
    whose size the store tells (before, the first snapshot after a restart
    ignored it)."""
    entries = _log_of_new_accounts(ENTRIES)
    config = FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0.5)
    first = _snapshots(config, entries[:200])[-1]
    store = Store()
    store.snapshots.append(first)
    restored = ReplayState(
        core.restore_snapshot(first.state), first.seq, first.last_batch_id, verifier=None
    )
    follower = Follower(
        log=ListLog(entries),  # type: ignore[arg-type]
        snapshots=store,  # type: ignore[arg-type]
        clock=NoClock(),
        replay=restored,
        config=config,
    )

    async def tail() -> None:
        while follower.applied_seq < len(entries):
            await follower.poll(wait_ms=0)

    asyncio.run(tail())
    sizes = {entry.seq: len(entry.payload) for entry in entries}
    written = store.snapshots[1:]
    assert written, "no snapshot after the restart"
    log_bytes = sum(sizes[seq] for seq in range(first.seq + 1, written[0].seq + 1))
    assert log_bytes >= 0.5 * len(first.state)


class SlowWriter:
    """Captures at once, then stores only once the follower has applied
    `behind` more entries: a forked child still encoding."""

    def __init__(self, store: Store, behind: int) -> None:
        self.store = store
        self.behind = behind
        self.follower: Follower | None = None
        self.applied_while_writing: list[tuple[int, int]] = []

    async def write(self, capture: Callable[[], Snapshot], loop_blocks: LoopBlocks) -> SnapshotInfo:
        snapshot = capture()
        assert self.follower is not None
        for _ in range(1_000):
            if self.follower.applied_seq >= snapshot.seq + self.behind:
                break
            await asyncio.sleep(0)
        self.applied_while_writing.append((snapshot.seq, self.follower.applied_seq))
        return SnapshotInfo(snapshot.seq, await self.store.put(snapshot))


def test_the_follower_applies_the_log_while_a_snapshot_is_written() -> None:
    """The writer has the state as of its start; the entries applied while it
    writes count towards the next snapshot, which is due as if the writer had
    been instant."""
    entries = _log_of_new_accounts(100)
    store = Store()
    writer = SlowWriter(store, behind=5)
    follower = Follower(
        log=ListLog(entries),  # type: ignore[arg-type]
        snapshots=store,  # type: ignore[arg-type]
        clock=NoClock(),
        replay=ReplayState.empty(None, verifier=None),
        config=FollowerConfig(read_max_entries=1, snapshot_every_entries=10, snapshot_log_ratio=0),
        snapshot_writer=writer,
    )
    writer.follower = follower

    async def tail() -> None:
        while follower.applied_seq < len(entries):
            await follower.poll(wait_ms=0)

    asyncio.run(tail())
    assert [s.seq for s in store.snapshots] == list(range(10, 101, 10))
    assert writer.applied_while_writing[:3] == [(10, 15), (20, 25), (30, 35)]
    for snapshot in store.snapshots:
        replay = ReplayState.empty(None, verifier=None)
        for entry in entries[: snapshot.seq]:
            replay.apply(entry)
        assert snapshot.state_hash == core.state_hash(replay.state)
