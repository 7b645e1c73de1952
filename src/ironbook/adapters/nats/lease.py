"""`Lease` on a JetStream KV bucket with per-key TTLs.

One key per lease. The KV revision (the stream sequence of the key's newest
message) is the fencing token: it grows every time anybody writes the key.

- acquire: publish with `Nats-Expected-Last-Subject-Sequence: 0` (the key has
  no message) or, after a graceful release, the revision of the delete marker;
  with `Nats-TTL`, so a dead holder's lease vanishes on its own.
- renew: publish with the expected revision and `Nats-TTL` again. Not
  `kv.update()`: it silently drops the per-message TTL, and the lease would
  never expire (measured).
- release: a delete marker with the expected revision, or, if a renewal whose
  ack was lost moved the key on and its newest message is still ours, with
  that message's revision.

All writes are raw publishes to `$KV.<bucket>.<key>`, so every header is ours.
When the bucket cannot be reached (timeout, no connection, no quorum) acquire
and renew raise `LeaseUnavailable`: the caller does not know whether it holds
the lease. Leases only give liveness; the log's expected sequence gives safety.
The value written is `<holder>/<instance>`, with a random instance id per
`NatsLease` object, so two processes that use the same holder name (a replica
restarted while its frozen predecessor still runs) never mistake each other's
writes for their own.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.provision import (
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_CONSTANT,
    open_or_create,
    request,
)
from ironbook.replication.interfaces import LeaseUnavailable

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "ironbook_leases"
DEFAULT_TTL_MS = 1000
MIN_TTL_MS = 1000  # the server refuses shorter per-message TTLs (10165)
DEFAULT_TIMEOUT_MS = 1000

_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_TTL = "Nats-TTL"
_KV_OPERATION = "KV-Operation"
_WRONG_LAST_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")


async def ensure_lease_bucket(
    nc: NatsClient, bucket: str = DEFAULT_BUCKET, *, replicas: int = 3
) -> None:
    """An R3 KV bucket, one revision per key, per-message TTLs allowed."""
    js = nc.jetstream()
    await open_or_create(
        f"kv bucket {bucket}",
        lambda: js.key_value(bucket),
        lambda: js.create_key_value(bucket=bucket, history=1, replicas=replicas),
    )


async def start_revisions_above(
    nc: NatsClient, revision: int, bucket: str = DEFAULT_BUCKET
) -> bool:
    """Make every later revision of `bucket` (so every later term) greater
    than `revision`, by purging its stream up to `revision + 1` (an empty
    stream purged so starts its sequence there); nothing if its revisions are
    already past. Whether it purged: only for a bucket nobody holds a lease
    in (a purge drops every key)."""
    stream = f"KV_{bucket}"
    info = await nc.jetstream().stream_info(stream)
    if info.state.last_seq > revision:
        return False
    reply = await nc.request(
        f"$JS.API.STREAM.PURGE.{stream}",
        json.dumps({"seq": revision + 1}).encode(),
        timeout=DEFAULT_TIMEOUT_MS / 1000,
    )
    answer = json.loads(reply.data)
    if not answer.get("success"):
        raise LeaseUnavailable(f"{stream}: purge to {revision + 1} refused: {answer.get('error')}")
    return True


class NatsLease:
    """The lease `key` in KV bucket `bucket`."""

    def __init__(
        self,
        nc: NatsClient,
        key: str,
        *,
        bucket: str = DEFAULT_BUCKET,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> None:
        if ttl_ms < MIN_TTL_MS:
            raise ValueError(f"lease ttl_ms must be >= {MIN_TTL_MS} (server minimum)")
        self._nc = nc
        self.key = key
        self.bucket = bucket
        self.ttl_ms = ttl_ms
        self._subject = f"$KV.{bucket}.{key}"
        self._stream = f"KV_{bucket}"
        self._timeout_s = timeout_ms / 1000
        self._instance = secrets.token_hex(6)

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        key: str,
        *,
        bucket: str = DEFAULT_BUCKET,
        ttl_ms: int = DEFAULT_TTL_MS,
        replicas: int = 3,
    ) -> NatsLease:
        await ensure_lease_bucket(nc, bucket, replicas=replicas)
        return cls(nc, key, bucket=bucket, ttl_ms=ttl_ms)

    async def acquire(self, holder: str) -> int | None:
        outcome = await self._write(holder, expected_revision=0)
        if not isinstance(outcome, _WrongRevision):
            return outcome
        current = outcome.current_revision
        if current is None:
            return None
        message = await self._message(current)
        if message is None:
            return None
        if not message.deleted:
            # Held. Even when the holder is us (an acquire whose ack was lost),
            # it is not adopted: the revision is a term, and reusing a term
            # for a second leadership would reuse its batch ids. It expires.
            return None
        # A graceful release left a delete marker: the lease is free; take it
        # by expecting the marker's revision.
        retried = await self._write(holder, expected_revision=current)
        return None if isinstance(retried, _WrongRevision) else retried

    async def renew(self, holder: str, revision: int) -> int | None:
        assert revision > 0
        outcome = await self._write(holder, expected_revision=revision)
        if not isinstance(outcome, _WrongRevision):
            return outcome
        # The key moved on. If every write since `revision` was ours (a renewal
        # whose ack was lost landed), the newest message is still ours: a
        # rival can only write after our lease expired, and then we could not
        # have written again, since we never learnt its revision.
        current = outcome.current_revision
        if current is None or current <= revision:
            return None
        message = await self._message(current)
        if message is None or message.deleted or message.holder != self._value(holder):
            return None
        return current

    async def release(self, holder: str, revision: int) -> None:
        try:
            outcome = await self._publish(holder, revision, {_KV_OPERATION: "DEL"})
            if not isinstance(outcome, _WrongRevision):
                return
            # A renewal whose ack was lost (a graceful stop cancels one in
            # flight) may have moved the key on: if its newest message is still
            # ours, delete that one, or a follower waits out the TTL.
            current = outcome.current_revision
            if current is None or current <= revision:
                return
            message = await self._message(current)
            if message is None or message.deleted or message.holder != self._value(holder):
                return
            await self._publish(holder, current, {_KV_OPERATION: "DEL"})
        except LeaseUnavailable as err:
            log.info("lease %s: release at %d unconfirmed: %s", self.key, revision, err)

    def _value(self, holder: str) -> bytes:
        return f"{holder}/{self._instance}".encode()

    async def _write(self, holder: str, *, expected_revision: int) -> int | _WrongRevision:
        """Publish `holder` with the TTL if the key is at `expected_revision`:
        the new revision, or `_WrongRevision` if the key is elsewhere."""
        return await self._publish(holder, expected_revision, {_TTL: f"{self.ttl_ms}ms"})

    async def _publish(
        self, holder: str, expected_revision: int, headers: dict[str, str]
    ) -> int | _WrongRevision:
        """Publish `holder` with `headers` if the key is at `expected_revision`."""
        headers = {_EXPECTED_LAST_SUBJECT_SEQ: str(expected_revision), **headers}
        try:
            reply = await request(
                self._nc,
                self._subject,
                self._value(holder),
                timeout_s=self._timeout_s,
                headers=headers,
            )
            ack: dict[str, Any] = json.loads(reply.data)
        except (nats.errors.Error, OSError, ValueError) as err:
            raise LeaseUnavailable(f"lease {self.key}: write unconfirmed: {err!r}") from err
        error = ack.get("error")
        if error is None:
            return int(ack["seq"])
        code = error.get("err_code")
        description = str(error.get("description", ""))
        if code in (ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CONSTANT):
            match = _WRONG_LAST_SEQUENCE.search(description)
            return _WrongRevision(int(match.group(1)) if match else None)
        raise LeaseUnavailable(f"lease {self.key}: write refused ({code}): {description}")

    async def _message(self, revision: int) -> _LeaseMessage | None:
        """Message `revision` of the bucket's stream, if it is this key's.

        Asked of the stream leader (`STREAM.MSG.GET`); a message at a given
        revision never changes, so the answer cannot be stale. None when that
        revision is gone (expired) or belongs to another key."""
        msg_get = json.dumps({"seq": revision}).encode()
        try:
            reply = await request(
                self._nc,
                f"$JS.API.STREAM.MSG.GET.{self._stream}",
                msg_get,
                timeout_s=self._timeout_s,
            )
            answer: dict[str, Any] = json.loads(reply.data)
        except (nats.errors.Error, OSError, ValueError) as err:
            raise LeaseUnavailable(f"lease {self.key}: read: {err!r}") from err
        message = answer.get("message")
        if not isinstance(message, dict) or message.get("subject") != self._subject:
            return None
        headers = base64.b64decode(message.get("hdrs") or b"").decode(errors="replace")
        operation = ""
        for line in headers.splitlines():
            name, _, header_value = line.partition(":")
            if name.strip().lower() == _KV_OPERATION.lower():
                operation = header_value.strip()
        holder = base64.b64decode(message.get("data") or b"")
        return _LeaseMessage(holder=holder, deleted=operation in ("DEL", "PURGE"))


@dataclass(frozen=True)
class _LeaseMessage:
    holder: bytes
    deleted: bool


class _WrongRevision:
    """The key is not at the expected revision; it is at `current_revision`."""

    __slots__ = ("current_revision",)

    def __init__(self, current_revision: int | None) -> None:
        self.current_revision = current_revision
