"""The small interfaces the replication protocol is written against.

The protocol (sequencer, follower, roles, snapshots) never touches an engine
directly: it sees a `Log`, a `Lease`, a `SnapshotStore` (and a
`SnapshotWriter` to it), a `Clock` and a transport. `replication.sim`
implements them in memory with seeded faults; `adapters.nats` implements them
on NATS JetStream (and `adapters.forked_snapshots` the writer, in a child
process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from ironbook.replication.families import Family
from ironbook.replication.loop_blocks import LoopBlocks


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


class LeaseUnavailable(ReplicationError):
    """The lease store cannot be reached right now. The caller does not know
    whether it still holds the lease."""


class SnapshotUnavailable(ReplicationError):
    """The snapshot store cannot be reached right now."""


class TransportError(ReplicationError):
    """A request to the leader got no answer: the caller may retry it with the
    same request id."""


class RequestTimeout(TransportError):
    """No reply within the request's timeout (lost, slow, or the leader died)."""


class NoResponders(TransportError):
    """Nobody is serving the partition right now (no leader, or mid-failover)."""


class MalformedReply(TransportError):
    """A reply arrived that cannot be decoded."""


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
    fencing (the log's expected-sequence check, and the batch chain replay
    enforces, see `replication.batch`). Methods raise `LeaseUnavailable` when
    the lease store cannot be reached.
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
    last_batch_id: str = ""
    """The id of the newest applied (non-void) entry at or before `seq`: the
    next batch must name it as its predecessor (see `replication.batch`)."""
    quarantined: int = 0
    """Log entries up to `seq` that were quarantined (see `replication.batch`)."""
    tree_nodes: list[bytes] | None = None
    """The frontier of the log's Merkle tree at `seq` (`merkle.Frontier.nodes`);
    None when the writer kept no tree."""


class SnapshotInfo(msgspec.Struct, frozen=True):
    seq: int
    size_bytes: int
    """What the store holds for it, in bytes (as `SnapshotStore.put` returns)."""


class SnapshotStore(Protocol):
    """Where replicas keep snapshots. Methods raise `SnapshotUnavailable` when
    the store cannot be reached."""

    async def put(self, snapshot: Snapshot) -> int:
        """Store it; returns the bytes stored (after any compression)."""
        ...

    async def latest(self) -> Snapshot | None: ...

    async def latest_info(self) -> SnapshotInfo | None:
        """The newest snapshot's sequence and size (None: no snapshot), without
        reading it."""
        ...


class SnapshotWriter(Protocol):
    """How a follower's snapshot gets from its state into the `SnapshotStore`:
    encoded on the follower's own event loop (`follower.InProcessSnapshotWriter`,
    the simulator's), or in a forked child process while the loop goes on
    (`adapters.forked_snapshots`, the replica service's)."""

    async def write(self, capture: Callable[[], Snapshot], loop_blocks: LoopBlocks) -> SnapshotInfo:
        """Store the snapshot `capture` makes (pure CPU: it encodes and hashes
        the state). `capture` sees the state as it is when `write` is called:
        a writer calls it, or forks, before its first suspension, so the
        caller's state may change as soon as `write` first yields. Records the
        caller's event-loop block as `snapshot` in `loop_blocks`. Returns what
        was stored; raises `ReplicationError` when nothing was (the caller
        tries again later)."""
        ...


class Signer(Protocol):
    """Signs the batches a leader appends (the proof of origin followers
    check). Implementations bind the signature to their partition, so a batch
    signed for one partition never verifies on another."""

    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):
    """Checks a batch signature made by the partition's `Signer`."""

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a signature the partition's key made over `message`."""
        ...


class Clock(Protocol):
    """Time, injected so the simulator can run it virtually."""

    def now_ms(self) -> int: ...

    async def sleep(self, ms: float) -> None: ...


class InboundRequest(Protocol):
    """One command that reached the leader, with the way back to its sender."""

    @property
    def payload(self) -> bytes:
        """The encoded command (it carries its own request id)."""
        ...

    @property
    def family(self) -> Family:
        """The command family of the subject it arrived on; a command of
        another family is refused."""
        ...

    async def respond(self, payload: bytes) -> None:
        """Send the reply. Never raises: a reply that cannot be delivered is
        lost, and the client retries with the same request id."""
        ...


class RequestInbox(Protocol):
    """The commands sent to a partition, as seen by the replica serving it."""

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[InboundRequest]:
        """Wait up to `wait_ms` for at least one request, then return every
        request already received, at most `max_requests`, oldest first. Returns
        an empty sequence if none arrived in time."""
        ...

    async def close(self) -> None:
        """Stop receiving. Requests not yet returned by `receive` are dropped;
        their clients time out and retry elsewhere."""
        ...


class RequestServer(Protocol):
    """Server side of the command transport (a NATS queue subscription)."""

    async def listen(self) -> RequestInbox:
        """Start receiving the partition's commands; a replica listens only
        while it leads."""
        ...


class CommandTransport(Protocol):
    """Client side of the command transport (NATS requests to the partitions'
    batch subjects)."""

    async def request(
        self, partition: int, family: Family, payloads: Sequence[bytes], *, timeout_ms: int
    ) -> Sequence[bytes]:
        """Send encoded commands, all of command family `family`, to
        `partition`'s leader as one request and wait for its replies, one per
        command, in the same order.

        Raises `NoResponders` when nobody serves the partition,
        `RequestTimeout` when no reply came within `timeout_ms`,
        `MalformedReply` when the reply cannot be decoded, and
        `TransportError` when the connection fails.
        """
        ...

    async def close(self) -> None:
        """Release the connection if the transport owns it."""
        ...
