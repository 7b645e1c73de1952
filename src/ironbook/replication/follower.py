"""Followers: restore the newest snapshot, then tail the log and apply it.

A follower is a hot standby: its state is the log's state up to
`applied_seq`, exactly (no speculation), so it also writes the snapshots.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from ironbook import core
from ironbook.replication.batch import QuarantineHook, ReplayState
from ironbook.replication.concurrency import race
from ironbook.replication.interfaces import (
    Clock,
    Log,
    LogEntry,
    ReplicationError,
    Snapshot,
    SnapshotInfo,
    SnapshotStore,
    SnapshotWriter,
    Verifier,
)
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.merkle import Frontier
from ironbook.replication.tree_keeping import LogTree


class CatchUpStalled(ReplicationError):
    """The log could not be read for too many attempts in a row."""


class SnapshotCorrupt(ReplicationError):
    """A snapshot's state does not hash to the hash stored with it."""


@dataclass(frozen=True, slots=True)
class FollowerConfig:
    read_max_entries: int = 256
    """Entries fetched per log read."""
    snapshot_every_entries: int = 1_000
    """Write a snapshot after this many entries applied since the last one..."""
    snapshot_log_ratio: float = 3.0
    """...and once the log bytes applied since then are at least this many
    times the last snapshot's stored size (`SnapshotStore.put` returns it). A
    snapshot costs time in proportion to the state (encoding, hashing,
    compressing, upload; see `SnapshotWriter` for where the encoding runs), and
    the state grows with every bet: at a fixed entry count the cost per entry
    grew without bound (seconds per snapshot, every few seconds, under load).
    With the ratio a snapshot costs O(1) per log byte: the store is written at
    most 1/ratio bytes per log byte. A restart replays at most about this many
    times a stored snapshot's size of log; the NATS store compressed the states
    measured here about 5x, so 3.0 replays about half a state's worth, as 0.5
    did before snapshots were compressed (a state that compresses less replays
    more). 0 snapshots on the entry count alone."""
    snapshot_stagger: float = 0.0
    """Both thresholds are raised by this fraction (the replica sets it per
    node, 0-0.5), so that followers do not snapshot at the same moment: the
    later one finds the earlier one's snapshot in the store and counts from
    it instead of writing the same state again."""
    io_retry_backoff_ms: int = 50
    """Pause before retrying a log read that failed."""


APPLY_YIELD_MS = 20
"""A follower applying a long read yields the loop after this long."""


def snapshot_stagger(node_id: str) -> float:
    """A node's `FollowerConfig.snapshot_stagger`: 0-0.5, fixed per node id
    (so a seeded simulation stays reproducible)."""
    return zlib.crc32(node_id.encode()) % 1_000 / 2_000


async def restore(
    snapshots: SnapshotStore,
    ledger_config: core.LedgerConfig | None,
    *,
    verifier: Verifier | None,
    on_quarantine: QuarantineHook | None = None,
) -> tuple[ReplayState, Frontier | None]:
    """The newest snapshot, or an empty state at sequence 0, to be folded on
    with `verifier` (see `replication.batch`), with the log's Merkle frontier
    at its sequence (None: the snapshot carries none).

    Raises `SnapshotCorrupt` if the snapshot does not match its hash: a replica
    must not silently start from a wrong state.
    """
    snapshot = await snapshots.latest()
    if snapshot is None:
        empty = ReplayState.empty(ledger_config, verifier=verifier, on_quarantine=on_quarantine)
        return empty, Frontier()
    frontier = None
    if snapshot.tree_nodes is not None:
        try:
            frontier = Frontier(snapshot.seq, snapshot.tree_nodes)
        except ValueError:
            frontier = None  # Rebuilt from the log instead.
    return replay_from(snapshot, verifier=verifier, on_quarantine=on_quarantine), frontier


def replay_from(
    snapshot: Snapshot,
    *,
    verifier: Verifier | None,
    on_quarantine: QuarantineHook | None = None,
) -> ReplayState:
    """The state a snapshot holds, once it is found to match its hash
    (raises `SnapshotCorrupt`), to be folded on with `verifier`."""
    state = core.restore_snapshot(snapshot.state)
    actual = core.state_hash(state)
    if actual != snapshot.state_hash:
        raise SnapshotCorrupt(
            f"snapshot at {snapshot.seq} hashes to {actual}, stored {snapshot.state_hash}"
        )
    return ReplayState(
        state,
        snapshot.seq,
        snapshot.last_batch_id,
        verifier=verifier,
        quarantined=snapshot.quarantined,
        on_quarantine=on_quarantine,
    )


def take_snapshot(replay: ReplayState, tree: LogTree | None = None) -> Snapshot:
    # One encoding serves both: the hash is of the snapshot bytes.
    state, state_hash = core.snapshot_and_hash(replay.state)
    return Snapshot(
        seq=replay.applied_seq,
        state_hash=state_hash,
        state=state,
        last_batch_id=replay.last_batch_id,
        quarantined=replay.quarantined,
        tree_nodes=list(tree.frontier.nodes) if tree is not None else None,
    )


class InProcessSnapshotWriter:
    """Encodes the snapshot on the caller's event loop, then stores it: the
    simulator's writer (deterministic, no processes), and the measure of what a
    forked writer saves the loop."""

    def __init__(self, store: SnapshotStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def write(self, capture: Callable[[], Snapshot], loop_blocks: LoopBlocks) -> SnapshotInfo:
        started_ms = self._clock.now_ms()
        snapshot = capture()
        loop_blocks.record("snapshot", self._clock.now_ms() - started_ms)
        return SnapshotInfo(snapshot.seq, await self._store.put(snapshot))


class Follower:
    """Applies log entries, in order, to a state known to be at `applied_seq`."""

    def __init__(
        self,
        *,
        log: Log,
        snapshots: SnapshotStore,
        clock: Clock,
        replay: ReplayState,
        config: FollowerConfig,
        loop_blocks: LoopBlocks | None = None,
        tree: LogTree | None = None,
        snapshot_writer: SnapshotWriter | None = None,
    ) -> None:
        """`tree`: the log's Merkle tree at `replay.applied_seq`, kept in step.
        `snapshot_writer`: by default an `InProcessSnapshotWriter` to `snapshots`."""
        assert tree is None or tree.size == replay.applied_seq
        self.tree = tree
        self._log = log
        self._loop_blocks = loop_blocks or LoopBlocks()
        self._snapshots = snapshots
        self._snapshot_writer = snapshot_writer or InProcessSnapshotWriter(snapshots, clock)
        self._clock = clock
        self._config = config
        self.replay = replay
        self._snapshot_seq = replay.applied_seq
        self._snapshot_bytes = 0
        """Size of the last snapshot counted from: written here, written by
        another replica, or restored from (0: not known yet)."""
        self._log_bytes_since_snapshot = 0
        self._next_snapshot_try_seq = 0

    @property
    def state(self) -> core.LedgerState:
        return self.replay.state

    @property
    def applied_seq(self) -> int:
        return self.replay.applied_seq

    @property
    def quarantined(self) -> int:
        return self.replay.quarantined

    async def poll(self, *, wait_ms: int) -> int:
        """Read once (waiting up to `wait_ms` for news) and apply what came,
        then write a snapshot if one is due (reading and applying on while it
        is written). Returns how many entries the first read brought; a failed
        read counts as none."""
        read = await self._read_and_apply(wait_ms)
        await self._maybe_snapshot(wait_ms)
        return read

    async def _read_and_apply(self, wait_ms: int) -> int:
        try:
            entries = await self._log.read(
                self.applied_seq + 1, max_entries=self._config.read_max_entries, wait_ms=wait_ms
            )
        except ReplicationError:
            await self._clock.sleep(self._config.io_retry_backoff_ms)
            return 0
        await self._apply(entries)
        return len(entries)

    async def _apply_meanwhile(self, wait_ms: int) -> NoReturn:
        """Tail the log while a snapshot is written, until cancelled."""
        while True:
            # Yield first: with a log that answers without suspending, the
            # writer would otherwise never run again.
            await self._clock.sleep(0)
            await self._read_and_apply(wait_ms)

    async def catch_up(self, target_seq: int, *, max_idle_polls: int | None = None) -> None:
        """Apply the log at least up to `target_seq`. Raises `CatchUpStalled`
        after `max_idle_polls` polls in a row that brought nothing."""
        idle_polls = 0
        while self.applied_seq < target_seq:
            if await self.poll(wait_ms=self._config.io_retry_backoff_ms):
                idle_polls = 0
                continue
            idle_polls += 1
            if max_idle_polls is not None and idle_polls >= max_idle_polls:
                raise CatchUpStalled(
                    f"no log entries in {idle_polls} reads at {self.applied_seq} of {target_seq}"
                )

    async def _apply(self, entries: Sequence[LogEntry]) -> None:
        """Apply entries, letting the loop run other tasks (a candidate's
        lease renewal) whenever `APPLY_YIELD_MS` of applying has passed: one
        read may bring hundreds of full batches."""
        clock = self._clock
        started_ms = clock.now_ms()
        tree = self.tree
        for entry in entries:
            self.replay.apply(entry)
            if tree is not None:
                tree.add(entry.seq, entry.payload)
            self._log_bytes_since_snapshot += len(entry.payload)
            elapsed_ms = clock.now_ms() - started_ms
            if elapsed_ms >= APPLY_YIELD_MS:
                self._loop_blocks.record("apply", elapsed_ms)
                await clock.sleep(0)
                started_ms = clock.now_ms()
        self._loop_blocks.record("apply", clock.now_ms() - started_ms)

    def snapshot_due(self) -> bool:
        config = self._config
        raised = 1 + config.snapshot_stagger
        return (
            self.applied_seq - self._snapshot_seq >= config.snapshot_every_entries * raised
            and self._log_bytes_since_snapshot
            >= config.snapshot_log_ratio * raised * self._snapshot_bytes
        )

    async def _maybe_snapshot(self, wait_ms: int) -> None:
        if self.applied_seq < self._next_snapshot_try_seq or not self.snapshot_due():
            return
        try:
            newest = await self._snapshots.latest_info()
        except ReplicationError:
            self._snapshot_later()
            return
        if newest is not None and newest.seq > self._snapshot_seq:
            # Another replica wrote one since ours: a restart can start from
            # it, so count from there instead of writing the same state again.
            self._snapshot_seq = newest.seq
            self._snapshot_bytes = newest.size_bytes
            self._log_bytes_since_snapshot = 0
            return
        if newest is not None and newest.seq == self._snapshot_seq and not self._snapshot_bytes:
            # The snapshot this follower was restored from: now its size is known.
            self._snapshot_bytes = newest.size_bytes
            if not self.snapshot_due():
                return
        # The writer captures the state when it starts, before it first
        # yields (`SnapshotWriter.write`); the log applied after that, while
        # it writes, counts towards the next snapshot.
        capture = functools.partial(take_snapshot, self.replay, self.tree)
        log_bytes_captured = self._log_bytes_since_snapshot
        try:
            written = await race(
                self._snapshot_writer.write(capture, self._loop_blocks),
                self._apply_meanwhile(wait_ms),
            )
        except ReplicationError:
            self._snapshot_later()
            return
        self._snapshot_seq = written.seq
        self._snapshot_bytes = written.size_bytes
        self._log_bytes_since_snapshot -= log_bytes_captured

    def _snapshot_later(self) -> None:
        """The store did not answer, or the snapshot could not be made: try
        again only after another `snapshot_every_entries` entries, not on every
        poll (each try may wait out a timeout, and encodes the whole state)."""
        self._next_snapshot_try_seq = self.applied_seq + self._config.snapshot_every_entries
