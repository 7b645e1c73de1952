"""The significant-event log: who did what, why, to what, and when.

    stream   AUDIT_EVENTS (R3, file storage, never deletes or purges)
    subject  audit.event.<kind>
    body     one `SignificantEvent` as JSON

It is a log like a partition's: its entries are the leaves of its own Merkle
tree (log name `events`, tag FFFFFFFF), signed in checkpoints on
`AUDIT_CHECKPOINTS` by the event recorder. Any process records an event with
`record_significant_event`, or, from code that must not wait, notes it in an
`EventOutbox`; the recorder also derives the ledger's staff and market
actions and its quarantined entries from the partition logs
(`services/audit_events.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from ironbook.adapters.nats.provision import append_only_stream, ensure_stream

log = logging.getLogger("ironbook.audit.events")

EVENTS_STREAM = "AUDIT_EVENTS"
PUBLISH_TIMEOUT_S = 2.0
MAX_FIELD_CHARS = 1_000
"""Longer actor, reason, target or detail values are cut to this length."""
DUPLICATE_WINDOW_S = 120
"""JetStream drops a second event with the same `Nats-Msg-Id` within this."""
OUTBOX_CAPACITY = 1_000
OUTBOX_RETRY_FOR_S = 90.0
"""An outbox retries a failed event this long, well within the duplicate
window, so a retry whose first try was stored after all is dropped."""
OUTBOX_BACKOFF_S = (0.2, 5.0)


class SignificantEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str
    actor: str
    """Who: a principal (`staff:alice`), a replica (`p0-r2`) or a process."""
    reason: str
    target: str
    """What it was done to: an account, a market, a partition, a process."""
    detail: str = ""
    at_ms: int
    """Unix ms, the recording process's clock."""
    source: str = ""
    """Where it was derived from (`ledger/<p>/<seq>/<index>`), "" when recorded directly."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SignificantEvent)


def encode_event(event: SignificantEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> SignificantEvent:
    """Raises `msgspec.DecodeError` (or `ValidationError`) on anything else."""
    return _decoder.decode(data)


def event_subject(kind: str) -> str:
    return f"audit.event.{kind}"


def valid_kind(kind: str) -> bool:
    return 0 < len(kind) <= 40 and all(c.islower() or c == "_" for c in kind)


def events_stream_config(*, replicas: int) -> StreamConfig:
    return append_only_stream(
        EVENTS_STREAM, ["audit.event.>"], replicas=replicas, duplicate_window_s=DUPLICATE_WINDOW_S
    )


async def ensure_events_stream(nc: NatsClient, *, replicas: int) -> None:
    await ensure_stream(nc.jetstream(), events_stream_config(replicas=replicas))


def _cut(value: str) -> str:
    return value[:MAX_FIELD_CHARS]


async def record_significant_event(
    nc: NatsClient,
    kind: str,
    actor: str,
    reason: str,
    target: str,
    detail: str = "",
    *,
    source: str = "",
    msg_id: str | None = None,
    at_ms: int | None = None,
) -> bool:
    """Append one significant event to `AUDIT_EVENTS`; True once JetStream
    has stored it. Never raises: recording must not fail the action it
    records. A failure is logged as an error and returns False.
    `msg_id` de-duplicates a retried recording (JetStream's 2-minute window);
    `at_ms` (default: now) is when it happened."""
    if not valid_kind(kind):
        log.error("significant event of invalid kind %r not recorded", kind)
        return False
    event = SignificantEvent(
        kind=kind,
        actor=_cut(actor),
        reason=_cut(reason),
        target=_cut(target),
        detail=_cut(detail),
        at_ms=time.time_ns() // 1_000_000 if at_ms is None else at_ms,
        source=source,
    )
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    try:
        await nc.jetstream().publish(
            event_subject(kind),
            encode_event(event),
            timeout=PUBLISH_TIMEOUT_S,
            stream=EVENTS_STREAM,
            headers=headers,
        )
    except (nats.errors.Error, OSError) as err:
        log.error("significant event %s (%s on %s) not recorded: %r", kind, actor, target, err)
        return False
    return True


class NoteEvent(Protocol):
    """`EventOutbox.note`, as the code that notes events sees it."""

    def __call__(
        self,
        kind: str,
        actor: str,
        reason: str,
        target: str,
        detail: str = "",
        *,
        msg_id: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Noted:
    kind: str
    actor: str
    reason: str
    target: str
    detail: str
    msg_id: str
    at_ms: int
    noted_at: float
    """`time.monotonic()` when noted."""


class EventOutbox:
    """Significant events noted by code that must not wait (a supervisor
    round, a heartbeat loop, a webhook), written in order by `run` (which
    may start later: events noted before wait for it).

    `note` never blocks or raises: when `capacity` events are waiting,
    further ones are dropped and counted in a warning. `run` retries an
    event that could not be stored (NATS down, no stream quorum) with
    backoff for up to `OUTBOX_RETRY_FOR_S`, under one `Nats-Msg-Id`, so a
    retry of an event that was stored after all is not stored twice; then
    it gives the event up with an error."""

    def __init__(
        self, *, capacity: int = OUTBOX_CAPACITY, retry_for_s: float = OUTBOX_RETRY_FOR_S
    ) -> None:
        self._waiting: asyncio.Queue[_Noted] = asyncio.Queue(capacity)
        self._writing: _Noted | None = None
        """The event being written: kept if `run` is cancelled, written first by the next."""
        self._retry_for_s = retry_for_s
        self.dropped = 0
        """Events dropped because the outbox was full."""
        self.given_up = 0
        """Events that could not be stored within `retry_for_s`."""
        self.recorded = 0

    def note(
        self,
        kind: str,
        actor: str,
        reason: str,
        target: str,
        detail: str = "",
        *,
        msg_id: str | None = None,
    ) -> None:
        """Record this event soon, stamped now. `msg_id` (default: a fresh
        one) de-duplicates the same event noted by several processes."""
        noted = _Noted(
            kind,
            actor,
            reason,
            target,
            detail,
            msg_id or f"{kind}-{uuid.uuid4()}",
            time.time_ns() // 1_000_000,
            time.monotonic(),
        )
        try:
            self._waiting.put_nowait(noted)
        except asyncio.QueueFull:
            self.dropped += 1

    @property
    def waiting(self) -> int:
        return self._waiting.qsize() + (self._writing is not None)

    async def run(self, nc: NatsClient) -> None:
        """Write noted events (those noted before too) to the
        significant-event log through `nc`, until cancelled. An event being
        written when it is cancelled is the first the next `run` writes
        (under the same `Nats-Msg-Id`)."""
        reported_drops = 0
        while True:
            if self._writing is None:
                self._writing = await self._waiting.get()
            await self._write(nc, self._writing)
            self._writing = None
            if self.dropped != reported_drops:
                log.warning(
                    "%d significant events dropped: too many waiting", self.dropped - reported_drops
                )
                reported_drops = self.dropped

    async def _write(self, nc: NatsClient, noted: _Noted) -> None:
        backoff_s, max_backoff_s = OUTBOX_BACKOFF_S
        while True:
            stored = await record_significant_event(
                nc,
                noted.kind,
                noted.actor,
                noted.reason,
                noted.target,
                noted.detail,
                msg_id=noted.msg_id,
                at_ms=noted.at_ms,
            )
            if stored:
                self.recorded += 1
                return
            if not valid_kind(noted.kind) or (
                time.monotonic() - noted.noted_at + backoff_s > self._retry_for_s
            ):
                self.given_up += 1
                log.error(
                    "significant event %s (%s on %s) given up after %.0f s",
                    noted.kind,
                    noted.actor,
                    noted.target,
                    time.monotonic() - noted.noted_at,
                )
                return
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, max_backoff_s)
