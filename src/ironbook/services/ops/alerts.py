"""Alerts from Alertmanager: the webhook contract, the record of every
notification, and the alerts firing now.

Alertmanager posts a group of alerts (webhook payload version 4) whenever a
group changes; each alert in it is `firing` or `resolved`. Every alert of
every notification is kept: one JSON line in the alerts file, one message on
NATS (`ALERTS_SUBJECT`), one significant event (`alert`, `note_alert`) and
the book of firing alerts the console shows (`AlertBook`). docs/alerting.md holds the contract.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from ironbook.adapters.audit.events import NoteEvent

ALERTS_SUBJECT = "ironbook.alerts"
ALERT_EVENT = "alert"
"""The significant-event kind of every alert received."""
MAX_BODY_BYTES = 1 << 20
MAX_ALERTS_PER_NOTIFICATION = 1_000
MAX_FIRING = 10_000
RECENT_KEPT = 200
_MAX_LABELS = 64


class WebhookAlert(msgspec.Struct, frozen=True, rename="camel"):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = msgspec.field(default="", name="generatorURL")
    fingerprint: str = ""


class WebhookPayload(msgspec.Struct, frozen=True, rename="camel"):
    """What Alertmanager's webhook receiver posts (version 4)."""

    version: str
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert]
    receiver: str = ""
    group_key: str = ""
    truncated_alerts: int = 0
    external_url: str = msgspec.field(default="", name="externalURL")


class AlertRecord(msgspec.Struct, frozen=True):
    """One alert of one notification, as recorded and published."""

    received_at_ms: int
    status: Literal["firing", "resolved"]
    alertname: str
    severity: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str


class BadNotification(ValueError):
    """A webhook body that is not an Alertmanager notification."""


_payload_decoder = msgspec.json.Decoder(WebhookPayload)
_encoder = msgspec.json.Encoder()


def decode_notification(body: bytes, received_at_ms: int) -> list[AlertRecord]:
    """The alerts of one webhook body; `BadNotification` when it is not one."""
    if len(body) > MAX_BODY_BYTES:
        raise BadNotification(f"body over {MAX_BODY_BYTES} bytes")
    try:
        payload = _payload_decoder.decode(body)
    except msgspec.MsgspecError as err:
        raise BadNotification(str(err)) from err
    if len(payload.alerts) > MAX_ALERTS_PER_NOTIFICATION:
        raise BadNotification(f"more than {MAX_ALERTS_PER_NOTIFICATION} alerts")
    records = []
    for alert in payload.alerts:
        if len(alert.labels) > _MAX_LABELS or "alertname" not in alert.labels:
            raise BadNotification("every alert needs an alertname label (and few labels)")
        records.append(
            AlertRecord(
                received_at_ms=received_at_ms,
                status=alert.status,
                alertname=alert.labels["alertname"],
                severity=alert.labels.get("severity", ""),
                fingerprint=alert.fingerprint or _fingerprint(alert.labels),
                labels=alert.labels,
                annotations=alert.annotations,
                starts_at=alert.starts_at,
                ends_at=alert.ends_at,
            )
        )
    return records


def _fingerprint(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def encode_record(record: AlertRecord) -> bytes:
    return _encoder.encode(record)


class AlertBook:
    """The alerts firing now (by fingerprint) and the latest notifications,
    appended to `path` as JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.firing: dict[str, AlertRecord] = {}
        self.recent: collections.deque[AlertRecord] = collections.deque(maxlen=RECENT_KEPT)
        self.received = {"firing": 0, "resolved": 0}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")

    def close(self) -> None:
        self._file.close()

    def record(self, records: list[AlertRecord]) -> None:
        for record in records:
            self._file.write(encode_record(record) + b"\n")
            self.received[record.status] += 1
            self.recent.appendleft(record)
            if record.status == "firing":
                if record.fingerprint in self.firing or len(self.firing) < MAX_FIRING:
                    self.firing[record.fingerprint] = record
            else:
                self.firing.pop(record.fingerprint, None)
        self._file.flush()

    def firing_now(self) -> Iterator[AlertRecord]:
        return iter(sorted(self.firing.values(), key=lambda r: r.received_at_ms))


def read_records(path: Path) -> list[AlertRecord]:
    """The alerts file's records, oldest first (none if there is no file)."""
    if not path.exists():
        return []
    decoder = msgspec.json.Decoder(AlertRecord)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def alert_target(record: AlertRecord) -> str:
    """What the alert is about, from its labels (`name=p0-r2,partition=0`);
    "" for an alert about the whole cluster."""
    return ",".join(
        f"{key}={value}"
        for key, value in sorted(record.labels.items())
        if key in ("name", "worker", "partition", "producer", "child", "server")
    )


def alert_spans(records: Sequence[AlertRecord]) -> list[tuple[AlertRecord, int | None]]:
    """Each alert's spell of firing, in the order they began: its first
    firing notification (Alertmanager sends a firing alert again with every
    change to its group) and when its resolution was received, None if it
    was not. An alert that fires again after resolving begins a new spell."""
    spans: list[tuple[AlertRecord, int | None]] = []
    firing: dict[str, int] = {}
    """fingerprint -> its spell while it fires"""
    for record in records:
        if record.status == "firing" and record.fingerprint not in firing:
            firing[record.fingerprint] = len(spans)
            spans.append((record, None))
        elif record.status == "resolved" and record.fingerprint in firing:
            index = firing.pop(record.fingerprint)
            spans[index] = (spans[index][0], record.received_at_ms)
    return spans


def describe(record: AlertRecord) -> str:
    """One line for a report: UTC time, status, alert, what it is about."""
    at = time.strftime("%H:%M:%S", time.gmtime(record.received_at_ms / 1000))
    about = alert_target(record)
    return f"{at} {record.status:<8} {record.alertname} {about} ({record.severity})".rstrip()


def note_alert(note: NoteEvent, record: AlertRecord) -> None:
    """Note one alert of a notification as a significant event (`alert`):
    Alertmanager is the actor, the alert and its status the reason."""
    summary = record.annotations.get("summary", "")
    note(
        ALERT_EVENT,
        actor="alertmanager",
        reason=f"{record.alertname} {record.status}" + (f": {summary}" if summary else ""),
        target=alert_target(record) or "cluster",
        detail=(
            f"severity {record.severity or '-'}, fingerprint {record.fingerprint}, "
            f"starts {record.starts_at}, ends {record.ends_at}"
        ),
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000
