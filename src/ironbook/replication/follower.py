"""Followers: restore the newest snapshot, then tail the log and apply it.

A follower is a hot standby: its state is the log's state up to
`applied_seq`, exactly (no speculation), so it also writes the snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ironbook import core
from ironbook.replication.interfaces import (
    Clock,
    LogEntry,
    ReplicationError,
    Snapshot,
    SnapshotStore,
)
from ironbook.replication.interfaces import Log as LogInterface


class LogGap(ReplicationError):
    """The log returned an entry that does not follow the last one applied."""


class SnapshotCorrupt(ReplicationError):
    """A snapshot's state does not hash to the hash stored with it."""


@dataclass(frozen=True, slots=True)
class FollowerConfig:
    read_max_entries: int = 256
    """Entries fetched per log read."""
    snapshot_every_entries: int = 1_000
    """Write a snapshot after this many entries applied since the last one."""
    io_retry_backoff_ms: int = 50
    """Pause before retrying a log read that failed."""


async def restore(
    snapshots: SnapshotStore, ledger_config: core.LedgerConfig | None
) -> tuple[core.LedgerState, int]:
    """The newest snapshot's state and sequence, or an empty state at 0.

    Raises `SnapshotCorrupt` if the snapshot does not match its hash: a replica
    must not silently start from a wrong state.
    """
    snapshot = await snapshots.latest()
    if snapshot is None:
        return core.new_state(ledger_config), 0
    state = core.restore_snapshot(snapshot.state)
    actual = core.state_hash(state)
    if actual != snapshot.state_hash:
        raise SnapshotCorrupt(
            f"snapshot at {snapshot.seq} hashes to {actual}, stored {snapshot.state_hash}"
        )
    return state, snapshot.seq


def take_snapshot(state: core.LedgerState, seq: int) -> Snapshot:
    return Snapshot(seq=seq, state_hash=core.state_hash(state), state=core.snapshot_bytes(state))


class Follower:
    """Applies log entries, in order, to a state known to be at `applied_seq`."""

    def __init__(
        self,
        *,
        log: LogInterface,
        snapshots: SnapshotStore,
        clock: Clock,
        state: core.LedgerState,
        applied_seq: int,
        config: FollowerConfig,
    ) -> None:
        self._log = log
        self._snapshots = snapshots
        self._clock = clock
        self._config = config
        self.state = state
        self.applied_seq = applied_seq
        self._snapshot_seq = applied_seq

    async def poll(self, *, wait_ms: int) -> int:
        """Read once (waiting up to `wait_ms` for news) and apply what came.
        Returns how many entries were applied; a failed read counts as none."""
        try:
            entries = await self._log.read(
                self.applied_seq + 1, max_entries=self._config.read_max_entries, wait_ms=wait_ms
            )
        except ReplicationError:
            await self._clock.sleep(self._config.io_retry_backoff_ms)
            return 0
        self.apply_entries(entries)
        await self._maybe_snapshot()
        return len(entries)

    async def catch_up(self, target_seq: int) -> None:
        """Apply the log at least up to `target_seq`."""
        while self.applied_seq < target_seq:
            await self.poll(wait_ms=self._config.io_retry_backoff_ms)

    def apply_entries(self, entries: Sequence[LogEntry]) -> None:
        for entry in entries:
            if entry.seq != self.applied_seq + 1:
                raise LogGap(f"expected entry {self.applied_seq + 1}, got {entry.seq}")
            for event in core.decode_events(entry.payload):
                core.apply(self.state, event)
            self.applied_seq = entry.seq

    async def _maybe_snapshot(self) -> None:
        if self.applied_seq - self._snapshot_seq < self._config.snapshot_every_entries:
            return
        snapshot = take_snapshot(self.state, self.applied_seq)
        try:
            await self._snapshots.put(snapshot)
        except ReplicationError:
            return
        self._snapshot_seq = snapshot.seq
