"""The audit trail as the gateway reads it: bet receipts from the live log
and pages of the significant-event log."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.events import EventOutbox, SignificantEvent, decode_event
from ironbook.adapters.audit.proofs import ProofBuildError, encode_receipt
from ironbook.adapters.audit.stream import AuditedLog, receipt_from_log
from ironbook.replication.checkpoint import CheckpointFormatError
from ironbook.replication.interfaces import LogUnavailable
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.replication.tree_keeping import CheckpointUnavailable

SCAN_BATCH = 256
MAX_SCANNED = 10_000
"""Entries one page request reads at most; a sparse filter returns fewer
matches and a `next_after` to go on from."""


def parse_time_ms(value: str) -> int:
    """Unix milliseconds, or an ISO 8601 date or date-time (UTC unless it says);
    raises ValueError."""
    if value.isdigit():
        return int(value)
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return int(parsed.timestamp() * 1000)


class NotYetCheckpointed(Exception):
    """The entry is not covered by a checkpoint yet (about a second after it)."""


class AuditUnavailable(Exception):
    """The log or the checkpoint stream cannot be read right now."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    from_ms: int | None = None
    to_ms: int | None = None
    """Events with `from_ms <= at_ms < to_ms`."""
    kind: str | None = None
    actor: str | None = None
    after: int = 0
    """Stream sequence to continue after (a page's `next_after`)."""
    limit: int = 50

    def matches(self, event: SignificantEvent) -> bool:
        return (
            (self.from_ms is None or event.at_ms >= self.from_ms)
            and (self.to_ms is None or event.at_ms < self.to_ms)
            and (self.kind is None or event.kind == self.kind)
            and (self.actor is None or event.actor == self.actor)
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[tuple[int, SignificantEvent]]
    """(stream sequence, event)."""
    next_after: int | None
    """None when the log was read to its end."""


class NatsAuditTrail:
    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._outbox = EventOutbox()

    def note(self, kind: str, actor: str, reason: str, target: str, detail: str = "") -> None:
        """Record a significant event soon (`record_events` writes it), from
        code that cannot wait: a flood of failed logins must not become a
        flood of writes (`EventOutbox`)."""
        self._outbox.note(kind, actor, reason, target, detail)

    async def record_events(self) -> None:
        """Write noted events to the significant-event log, until cancelled."""
        await self._outbox.run(self._nc)

    async def receipt(self, partition: int, seq: int) -> bytes:
        """The receipt (JSON, as `ironbook audit verify-receipt` reads it) of
        entry `seq` of `partition`."""
        try:
            return encode_receipt(await receipt_from_log(self._nc, partition, seq))
        except ProofBuildError as err:
            raise NotYetCheckpointed(str(err)) from err
        except (LogUnavailable, CheckpointUnavailable, CheckpointFormatError) as err:
            raise AuditUnavailable(str(err)) from err

    async def events(self, query: EventQuery) -> EventPage:
        log = AuditedLog(self._nc, EVENTS_LOG)
        found: list[tuple[int, SignificantEvent]] = []
        seq = query.after
        try:
            while seq - query.after < MAX_SCANNED:
                entries = await log.read(seq + 1, max_entries=SCAN_BATCH)
                for entry in entries:
                    seq = entry.seq
                    try:
                        event = decode_event(entry.payload)
                    except msgspec.MsgspecError:
                        continue  # Not an event: the verifier reports the log, not this page.
                    if query.matches(event):
                        found.append((seq, event))
                        if len(found) == query.limit:
                            return EventPage(found, seq)
                if len(entries) < SCAN_BATCH:
                    return EventPage(found, None)
        except LogUnavailable as err:
            raise AuditUnavailable(str(err)) from err
        return EventPage(found, seq)
