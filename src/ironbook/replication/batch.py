"""The log's entry format, and the rule that folds the log into one history.

Every entry names the batch it was decided on top of (`prev_batch_id`).
Replay applies an entry only if that is the last entry applied; any other
entry is void: skipped by every replica alike, so it changes nothing.

Why the log's expected-sequence check alone is not enough: a leader with
batches k and k+1 in flight, whose k is fenced because another leader took
that position, would still land k+1, since the sequence k+1 expects is now
the other leader's entry. k+1 was decided on top of k, which is not in the
log; its `prev_batch_id` says so, and replay voids it. (The simulator found
this case; see docs/replication.md.)
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ironbook import core
from ironbook.replication.interfaces import LogEntry, ReplicationError


class LogGap(ReplicationError):
    """The log returned an entry that does not follow the last one applied."""


class BatchRecord(msgspec.Struct, frozen=True, array_like=True, tag="batch/1"):
    prev_batch_id: str
    """The batch id of the entry this batch was decided on top of ("" for the
    first entry of the log)."""
    events: bytes
    """`core.encode_events(...)` of the batch's events."""


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[BatchRecord] = msgspec.msgpack.Decoder(BatchRecord)


def encode_batch(prev_batch_id: str, events: Sequence[core.AnyEvent]) -> bytes:
    return _encoder.encode(BatchRecord(prev_batch_id, core.encode_events(list(events))))


def encode_batch_record(record: BatchRecord) -> bytes:
    return _encoder.encode(record)


def decode_batch(payload: bytes) -> BatchRecord:
    return _decoder.decode(payload)


class ReplayState:
    """A ledger state folded from the log up to `applied_seq` by the chain rule."""

    __slots__ = ("applied_seq", "last_batch_id", "state", "voided")

    def __init__(self, state: core.LedgerState, applied_seq: int, last_batch_id: str) -> None:
        self.state = state
        self.applied_seq = applied_seq
        self.last_batch_id = last_batch_id
        """The id of the newest entry that was applied (not void)."""
        self.voided = 0

    @classmethod
    def empty(cls, ledger_config: core.LedgerConfig | None = None) -> ReplayState:
        return cls(core.new_state(ledger_config), 0, "")

    def apply(self, entry: LogEntry) -> list[core.AnyEvent] | None:
        """Fold in the next entry; returns its events, or None if it is void."""
        if entry.seq != self.applied_seq + 1:
            raise LogGap(f"expected entry {self.applied_seq + 1}, got {entry.seq}")
        record = decode_batch(entry.payload)
        self.applied_seq = entry.seq
        if record.prev_batch_id != self.last_batch_id:
            self.voided += 1
            return None
        events = core.decode_events(record.events)
        for event in events:
            core.apply(self.state, event)
        self.last_batch_id = entry.batch_id
        return events


def void_seqs(entries: Sequence[LogEntry], last_batch_id: str = "") -> list[int]:
    """The sequences of the void entries among `entries` (which follow an
    entry whose applied predecessor is `last_batch_id`), without applying
    any events."""
    void: list[int] = []
    for entry in entries:
        if decode_batch(entry.payload).prev_batch_id == last_batch_id:
            last_batch_id = entry.batch_id
        else:
            void.append(entry.seq)
    return void
