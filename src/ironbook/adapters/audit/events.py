"""The significant-event log: who did what, why, to what, and when.

    stream   AUDIT_EVENTS (R3, file storage, never deletes or purges)
    subject  audit.event.<kind>
    body     one `SignificantEvent` as JSON

It is a log like a partition's: its entries are the leaves of its own Merkle
tree (log name `events`, tag FFFFFFFF), signed in checkpoints on
`AUDIT_CHECKPOINTS` by the event recorder. Any process records an event with
`record_significant_event`; the recorder also derives the ledger's staff and
market actions from the partition logs (`services/audit_events.py`).
"""

from __future__ import annotations

import logging
import time

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
        EVENTS_STREAM, ["audit.event.>"], replicas=replicas, duplicate_window_s=120
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
