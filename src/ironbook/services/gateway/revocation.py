"""Token revocation: a token id (`jti`) revoked anywhere is refused by every
gateway worker within a second, on cache hits too, and its WebSockets close.

Revocations live in the replicated JetStream KV bucket `ironbook-revocations`
(key: the jti; value: when and by whom). Every worker watches the whole bucket
from its start: the watch first delivers every revocation still kept (a worker
started or restarted after a revocation knows it before it serves), then each
new one once it is written. `ironbook token revoke JTI` and
`POST /v1/admin/tokens/{jti}/revoke` write the bucket.

A replicated, fsynced write can take long on a loaded cluster, and a
revocation should not wait for it to be enforced: the writer first publishes
the same record on the plain subject `ironbook.auth.revoked`, which every
running worker also follows, so running workers refuse the token within
milliseconds of the request; the bucket is what makes it last (a worker that
was not running, or missed the message, gets it from the watch).

An entry is kept for the longest token lifetime plus the clock leeway (the
bucket's TTL): past that no token it could name is still accepted anyway, so
the bucket and each worker's table stay bounded by the revocations of one
token lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from ironbook.adapters.nats.provision import open_or_create

log = logging.getLogger("ironbook.gateway.revocation")
security_log = logging.getLogger("ironbook.security")

BUCKET = "ironbook-revocations"
SUBJECT = "ironbook.auth.revoked"
JTI_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""A jti is a key of the bucket: no dots, no wildcards."""
RETENTION_MARGIN_S = 60
"""Kept this much longer than the longest token lifetime (clock leeway)."""


class RevocationRecord(msgspec.Struct, frozen=True):
    revoked_at_ms: int
    by: str


class RevocationMessage(msgspec.Struct, frozen=True):
    """What `SUBJECT` carries: the record and its key."""

    jti: str
    revoked_at_ms: int
    by: str


_decode_record = msgspec.json.Decoder(RevocationRecord).decode
_decode_message = msgspec.json.Decoder(RevocationMessage).decode


class Revocations:
    """The revoked token ids one worker knows, and the sockets waiting on them."""

    def __init__(self, retention_s: int) -> None:
        self.retention_s = retention_s + RETENTION_MARGIN_S
        self._revoked: OrderedDict[str, float] = OrderedDict()
        """jti -> revocation time (Unix s), in the order learned."""
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def __len__(self) -> int:
        return len(self._revoked)

    def add(self, jti: str, revoked_at_s: float, now_s: float | None = None) -> None:
        self._revoked[jti] = revoked_at_s
        for waiter in self._waiters.get(jti, ()):
            waiter.set()
        self._prune(time.time() if now_s is None else now_s)

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    async def wait_revoked(self, jti: str) -> None:
        """Return once `jti` is revoked."""
        if jti in self._revoked:
            return
        waiter = asyncio.Event()
        self._waiters.setdefault(jti, set()).add(waiter)
        try:
            await waiter.wait()
        finally:
            waiters = self._waiters[jti]
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[jti]

    def _prune(self, now_s: float) -> None:
        while self._revoked:
            jti, revoked_at_s = next(iter(self._revoked.items()))
            if revoked_at_s + self.retention_s >= now_s:
                return
            del self._revoked[jti]


class RevocationStore:
    """The bucket: write a revocation, and follow every one into a `Revocations`."""

    def __init__(self, nc: NatsClient, kv: KeyValue) -> None:
        self._nc = nc
        self._kv = kv

    @classmethod
    async def open(cls, nc: NatsClient, *, replicas: int, retention_s: int) -> RevocationStore:
        """The bucket, created if missing. An existing bucket is used as it is
        (its TTL was set from the lifetimes of when it was made)."""
        js = nc.jetstream()
        config = KeyValueConfig(
            bucket=BUCKET, history=1, ttl=retention_s + RETENTION_MARGIN_S, replicas=replicas
        )
        kv = await open_or_create(
            f"bucket {BUCKET}", lambda: js.key_value(BUCKET), lambda: js.create_key_value(config)
        )
        return cls(nc, kv)

    async def revoke(self, jti: str, *, by: str) -> int:
        """Tell the running workers, then record the revocation (replicated
        before this returns); its time in ms."""
        if not JTI_PATTERN.match(jti):
            raise ValueError(f"not a token id: {jti!r}")
        revoked_at_ms = time.time_ns() // 1_000_000
        await self._nc.publish(
            SUBJECT, msgspec.json.encode(RevocationMessage(jti, revoked_at_ms, by))
        )
        await self._kv.put(jti, msgspec.json.encode(RevocationRecord(revoked_at_ms, by)))
        security_log.warning(
            msgspec.json.encode({"event": "token_revoked", "jti": jti, "by": by}).decode()
        )
        return revoked_at_ms

    async def follow(self, revocations: Revocations, loaded: asyncio.Event) -> None:
        """Feed every revocation into `revocations` until cancelled; `loaded`
        is set once those already in the bucket are in."""

        async def announced(msg: Msg) -> None:
            try:
                message = _decode_message(msg.data)
            except msgspec.MsgspecError:
                log.warning("a message on %s is not a revocation; ignored", SUBJECT)
                return
            if JTI_PATTERN.match(message.jti):
                revocations.add(message.jti, message.revoked_at_ms / 1000)

        # Subscribed before the watch starts: nothing falls between the two.
        subscription = await self._nc.subscribe(SUBJECT, cb=announced)
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    loaded.set()
                    continue
                if entry.operation is not None or entry.value is None:
                    continue  # a delete or an expiry marker
                try:
                    record = _decode_record(entry.value)
                except msgspec.MsgspecError:
                    log.warning("revocation %s is not a revocation record; ignored", entry.key)
                    continue
                revocations.add(entry.key, record.revoked_at_ms / 1000)
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]
            with contextlib.suppress(nats.errors.Error, OSError):
                await subscription.unsubscribe()
