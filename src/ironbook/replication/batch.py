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

Anyone who can publish to the log can append to it, and anyone who reads
the tip can chain an entry onto it, so the chain says nothing about who
wrote an entry. The sequencer signs every batch (`SignedBatchRecord`) over
its batch id, its predecessor and its events, with a key only the replicas
hold. An entry that does not decode, whose events do not decode, whose
signature does not verify, or that is unsigned once the chain is signed, is
**quarantined**: skipped by every replica alike, like a void entry, and
counted. Nothing a foreign writer appends can stop a replica or change the
state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from ironbook import core
from ironbook.replication.interfaces import LogEntry, ReplicationError, Signer, Verifier


class LogGap(ReplicationError):
    """The log returned an entry that does not follow the last one applied."""


class BatchRecord(msgspec.Struct, frozen=True, array_like=True, tag="batch/1"):
    """An unsigned batch, as written before batches were signed. Applied only
    while the chain is unsigned: once a signed batch is applied, an unsigned
    one is quarantined."""

    prev_batch_id: str
    """The batch id of the entry this batch was decided on top of ("" for the
    first entry of the log)."""
    events: bytes
    """`core.encode_events(...)` of the batch's events."""


class SignedBatchRecord(msgspec.Struct, frozen=True, array_like=True, tag="batch/2"):
    prev_batch_id: str
    events: bytes
    signature: bytes
    """The partition's `Signer` over `signed_message(batch_id, prev_batch_id,
    events)`: the batch id (the log message id) is covered, so a signed
    payload cannot be re-published under another id, nor chained elsewhere."""


AnyBatchRecord = BatchRecord | SignedBatchRecord

SIGNED_BATCH_ID_PREFIX = "s"
"""Starts the id of every signed batch (`signed_batch_id`), and no unsigned
one (those were `<term>:<n>`): a replica knows from the id of the last entry
it applied whether the chain is signed, with nothing more to store."""

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[AnyBatchRecord] = msgspec.msgpack.Decoder(AnyBatchRecord)


def signed_batch_id(term: int, n: int) -> str:
    return f"{SIGNED_BATCH_ID_PREFIX}{term}:{n}"


def batch_term(batch_id: str) -> int | None:
    """The leadership term a batch id (`s<term>:<n>`, or an unsigned
    `<term>:<n>`) was written in; None if it is not a batch id."""
    term, separator, _ = batch_id.removeprefix(SIGNED_BATCH_ID_PREFIX).partition(":")
    return int(term) if separator and term.isdigit() else None


def is_signed_chain(last_batch_id: str) -> bool:
    """Whether the entry named `last_batch_id` was a signed batch: then only
    signed batches may follow it."""
    return last_batch_id.startswith(SIGNED_BATCH_ID_PREFIX)


def signed_message(batch_id: str, prev_batch_id: str, events: bytes) -> bytes:
    """What a batch's signature covers. The events enter by their SHA-256:
    one pass over a batch of up to ~150 KB, where Ed25519 over the bytes
    themselves would hash them twice to sign and once more to verify."""
    digest = hashlib.sha256(events).digest()
    return _encoder.encode(("ironbook-batch/2", batch_id, prev_batch_id, digest))


def encode_batch(prev_batch_id: str, events: Sequence[core.AnyEvent]) -> bytes:
    """An unsigned (`batch/1`) entry: tests and tools that build logs by hand."""
    return _encoder.encode(BatchRecord(prev_batch_id, core.encode_events(list(events))))


def encode_signed_batch(signer: Signer, batch_id: str, prev_batch_id: str, events: bytes) -> bytes:
    """The entry a leader appends: `events` is `core.encode_events(...)`."""
    signature = signer.sign(signed_message(batch_id, prev_batch_id, events))
    return _encoder.encode(SignedBatchRecord(prev_batch_id, events, signature))


def encode_batch_record(record: AnyBatchRecord) -> bytes:
    return _encoder.encode(record)


def decode_batch(payload: bytes) -> AnyBatchRecord:
    """Raises `msgspec.MsgspecError` on anything but a batch record."""
    return _decoder.decode(payload)


Admission = Literal["applied", "void", "quarantined"]

QuarantineHook = Callable[[LogEntry, str], None]
"""Told of every quarantined entry and why (a replica logs it as a security
event)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the fold rule makes of one log entry."""

    admission: Admission
    events: list[core.AnyEvent] | None = None
    """The entry's events, when it is applied."""
    reason: str = ""
    """Why it was quarantined."""


def admit(entry: LogEntry, last_batch_id: str, verifier: Verifier | None) -> Verdict:
    """The fold rule for one entry that follows the entry `last_batch_id`
    (the last one applied). Total: every input gets a verdict, the same on
    every replica. `verifier` None trusts signatures unchecked (readers that
    hold no key: tests, tools over logs they made)."""
    try:
        record = decode_batch(entry.payload)
    except msgspec.MsgspecError as error:
        return Verdict("quarantined", reason=f"undecodable entry: {error}")
    if isinstance(record, SignedBatchRecord):
        if verifier is not None and not verifier.verify(
            signed_message(entry.batch_id, record.prev_batch_id, record.events),
            record.signature,
        ):
            return Verdict("quarantined", reason="the signature does not verify")
    elif is_signed_chain(last_batch_id):
        return Verdict("quarantined", reason="unsigned entry on a signed chain")
    if record.prev_batch_id != last_batch_id:
        return Verdict("void")
    try:
        events = core.decode_events(record.events)
    except msgspec.MsgspecError as error:
        return Verdict("quarantined", reason=f"undecodable events: {error}")
    return Verdict("applied", events)


class ReplayState:
    """A ledger state folded from the log up to `applied_seq` by the chain rule."""

    __slots__ = (
        "applied_seq",
        "last_batch_id",
        "on_quarantine",
        "quarantined",
        "state",
        "verifier",
        "voided",
    )

    def __init__(
        self,
        state: core.LedgerState,
        applied_seq: int,
        last_batch_id: str,
        *,
        verifier: Verifier | None,
        quarantined: int = 0,
        on_quarantine: QuarantineHook | None = None,
    ) -> None:
        self.state = state
        self.applied_seq = applied_seq
        self.last_batch_id = last_batch_id
        """The id of the newest entry that was applied (not void)."""
        self.verifier = verifier
        self.voided = 0
        self.quarantined = quarantined
        """Entries quarantined up to `applied_seq` (carried by snapshots)."""
        self.on_quarantine = on_quarantine

    @classmethod
    def empty(
        cls,
        ledger_config: core.LedgerConfig | None = None,
        *,
        verifier: Verifier | None,
        on_quarantine: QuarantineHook | None = None,
    ) -> ReplayState:
        return cls(
            core.new_state(ledger_config), 0, "", verifier=verifier, on_quarantine=on_quarantine
        )

    def apply(self, entry: LogEntry) -> list[core.AnyEvent] | None:
        """Fold in the next entry; returns its events, or None if it is void
        or quarantined."""
        if entry.seq != self.applied_seq + 1:
            raise LogGap(f"expected entry {self.applied_seq + 1}, got {entry.seq}")
        verdict = admit(entry, self.last_batch_id, self.verifier)
        self.applied_seq = entry.seq
        if verdict.events is None:
            if verdict.admission == "quarantined":
                self.quarantined += 1
                if self.on_quarantine is not None:
                    self.on_quarantine(entry, verdict.reason)
            else:
                self.voided += 1
            return None
        for event in verdict.events:
            core.apply(self.state, event)
        self.last_batch_id = entry.batch_id
        return verdict.events


def skipped_seqs(
    entries: Sequence[LogEntry], last_batch_id: str = "", verifier: Verifier | None = None
) -> dict[Admission, list[int]]:
    """The sequences of the void and of the quarantined entries among
    `entries` (which follow the applied entry `last_batch_id`), without
    applying any events."""
    skipped: dict[Admission, list[int]] = {"void": [], "quarantined": []}
    for entry in entries:
        verdict = admit(entry, last_batch_id, verifier)
        if verdict.events is None:
            skipped[verdict.admission].append(entry.seq)
        else:
            last_batch_id = entry.batch_id
    return skipped
