"""The small interfaces the replication protocol is written against.

The protocol (sequencer, follower, roles, snapshots) never touches an engine
directly: it sees a `Log`, a `Lease`, a `SnapshotStore`, a `Clock` and a
transport. `replication.sim` implements them in memory with seeded faults;
`adapters.nats` implements them on NATS JetStream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class ReplicationError(Exception):
    """Base of every error the replication layer raises."""


class Fenced(ReplicationError):
    """An append's expected last sequence no longer matches the log: another
    writer has appended. The caller is deposed and must stop serving at once."""


class AppendUnknown(ReplicationError):
    """An append timed out or its connection broke: it may or may not have
    landed. Retrying with the same batch id and expected sequence tells which."""


class LogUnavailable(ReplicationError):
    """The log cannot be reached right now (no quorum, no connection)."""


class LogEntry(msgspec.Struct, frozen=True):
    """One appended batch: the log position it landed at, the writer's batch id
    and the encoded events."""

    seq: int
    batch_id: str
    payload: bytes


class Log(Protocol):
    """An append-only, replicated, totally ordered log (one per partition).

    Sequences start at 1; `last_seq() == 0` means the log is empty.
    """

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        """Append one batch if the log's last sequence is `expected_last_seq`.

        Returns the sequence the batch landed at. A batch id the log has already
        seen (within its de-duplication window) returns the original sequence
        without appending again, whatever the expected sequence.
        Raises `Fenced` on a sequence mismatch and `AppendUnknown` on timeout.
        """
        ...

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        """Entries with seq >= from_seq, in order, at most `max_entries`.

        Waits up to `wait_ms` for at least one entry; returns an empty sequence
        if none arrived in time.
        """
        ...

    async def last_seq(self) -> int:
        """The sequence of the newest entry (0 when empty)."""
        ...


class Lease(Protocol):
    """A leadership lease with a fencing revision.

    The revision strictly increases every time the lease changes hands, so it
    is usable as a term number. Leases give liveness only: safety comes from
    the log's expected-sequence check.
    """

    async def acquire(self, holder: str) -> int | None:
        """Take the lease if nobody holds it. Returns the new revision, or None."""
        ...

    async def renew(self, holder: str, revision: int) -> int | None:
        """Extend a lease held at `revision`. Returns the new revision, or None
        if the lease was lost (expired and taken, or never held)."""
        ...

    async def release(self, holder: str, revision: int) -> None:
        """Give the lease up early (graceful step-down). Never raises if lost."""
        ...


class Snapshot(msgspec.Struct, frozen=True):
    """The whole state machine at one log position."""

    seq: int
    state_hash: str
    state: bytes


class SnapshotStore(Protocol):
    async def put(self, snapshot: Snapshot) -> None: ...

    async def latest(self) -> Snapshot | None: ...


class Clock(Protocol):
    """Time, injected so the simulator can run it virtually."""

    def now_ms(self) -> int: ...

    async def sleep(self, ms: float) -> None: ...
