"""The command transport on NATS request/reply.

Clients send commands to `ironbook.cmdbatch.<partition>.<family>` with a
reply inbox: a msgpack list of encoded commands of that family
(`replication.families`), answered by a list of replies in the same order
(one NATS round trip for hundreds of bets). The family in the subject is what
the NATS permissions check; the leader refuses a command of another family.
Only the partition's leader subscribes (in a queue group, so a message is
handed to one subscriber even in the instant two replicas both think they
lead — the log's fencing decides which of them is right).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ironbook.adapters.nats.provision import request_once
from ironbook.replication.concurrency import wait_for
from ironbook.replication.families import FAMILIES, Family
from ironbook.replication.interfaces import (
    MalformedReply,
    NoResponders,
    RequestTimeout,
    TransportError,
)
from ironbook.replication.wire import RetryReply, encode_reply

DEFAULT_MAX_PENDING_REQUESTS = 20_000
_QUEUE_GROUP = "leader"
_OVERLOADED = encode_reply(RetryReply(reason="overloaded"))


def batch_subject(partition: int, family: Family) -> str:
    return f"ironbook.cmdbatch.{partition}.{family}"


def _family_of_subject(subject: str) -> Family | None:
    suffix = subject.rsplit(".", 1)[-1]
    return next((family for family in FAMILIES if family == suffix), None)


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder: msgspec.msgpack.Decoder[list[bytes]] = msgspec.msgpack.Decoder(list[bytes])


def encode_batch(payloads: Sequence[bytes]) -> bytes:
    return _batch_encoder.encode(list(payloads))


def decode_batch(data: bytes) -> list[bytes]:
    """Raises `msgspec.MsgspecError` on a malformed batch."""
    return _batch_decoder.decode(data)


class _BatchReply:
    """Collects the replies of one batch message; sends them all at once."""

    __slots__ = ("_msg", "_nc", "_remaining", "_replies")

    def __init__(self, nc: NatsClient, msg: Msg, size: int) -> None:
        self._nc = nc
        self._msg = msg
        self._replies: list[bytes] = [b""] * size
        self._remaining = size

    async def fill(self, index: int, payload: bytes) -> None:
        if self._replies[index]:
            return
        self._replies[index] = payload
        self._remaining -= 1
        if self._remaining == 0 and self._msg.reply:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.publish(self._msg.reply, encode_batch(self._replies))


class _BatchedRequest:
    __slots__ = ("_batch", "_index", "family", "payload")

    def __init__(self, batch: _BatchReply, index: int, payload: bytes, family: Family) -> None:
        self._batch = batch
        self._index = index
        self.payload = payload
        self.family = family

    async def respond(self, payload: bytes) -> None:
        await self._batch.fill(self._index, payload)


class NatsInbox:
    """Requests received while leading, in a bounded FIFO: a request that
    would overflow it is answered "retry: overloaded" at once instead of
    queueing (shed load, never queue without bound)."""

    def __init__(self, nc: NatsClient, max_pending: int) -> None:
        self._nc = nc
        self._max_pending = max_pending
        self._pending: deque[_BatchedRequest] = deque()
        self._arrived = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    async def start(self, partition: int) -> None:
        self._subscriptions = [
            await self._nc.subscribe(
                batch_subject(partition, family), queue=_QUEUE_GROUP, cb=self._on_batch
            )
            for family in FAMILIES
        ]

    async def _on_batch(self, msg: Msg) -> None:
        family = _family_of_subject(msg.subject)
        if family is None:
            return
        try:
            payloads = decode_batch(msg.data)
        except msgspec.MsgspecError:
            payloads = [msg.data]  # the sequencer answers it "bad request"
        batch = _BatchReply(self._nc, msg, len(payloads))
        room = max(0, self._max_pending - len(self._pending))
        self._pending.extend(
            _BatchedRequest(batch, index, payload, family)
            for index, payload in enumerate(payloads[:room])
        )
        for index in range(room, len(payloads)):
            await batch.fill(index, _OVERLOADED)
        if room:
            self._arrived.set()

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[_BatchedRequest]:
        pending = self._pending
        if not pending:
            self._arrived.clear()
            try:
                await wait_for(self._arrived.wait(), timeout=wait_ms / 1000)
            except TimeoutError:
                return []
        count = min(max_requests, len(pending))
        return [pending.popleft() for _ in range(count)]

    async def close(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(nats.errors.Error, OSError):
                await subscription.unsubscribe()
        self._subscriptions = []


class NatsRequestServer:
    def __init__(
        self, nc: NatsClient, partition: int, *, max_pending: int = DEFAULT_MAX_PENDING_REQUESTS
    ) -> None:
        self._nc = nc
        self._partition = partition
        self._max_pending = max_pending

    async def listen(self) -> NatsInbox:
        inbox = NatsInbox(self._nc, self._max_pending)
        await inbox.start(self._partition)
        return inbox


class NatsCommandTransport:
    """Implements `interfaces.CommandTransport`: one NATS request per batch,
    to the partition's batch subject."""

    def __init__(self, nc: NatsClient, *, owns_connection: bool = False) -> None:
        self._nc = nc
        self._owns_connection = owns_connection

    async def request(
        self, partition: int, family: Family, payloads: Sequence[bytes], *, timeout_ms: int
    ) -> list[bytes]:
        subject = batch_subject(partition, family)
        try:
            reply = await request_once(
                self._nc, subject, encode_batch(payloads), timeout_s=timeout_ms / 1000
            )
        except nats.errors.NoRespondersError as err:
            raise NoResponders(subject) from err
        except nats.errors.TimeoutError as err:
            raise RequestTimeout(f"{subject}: no reply in {timeout_ms} ms") from err
        except (nats.errors.Error, OSError) as err:
            raise TransportError(f"{subject}: {err!r}") from err
        try:
            return decode_batch(reply.data)
        except msgspec.MsgspecError as err:
            raise MalformedReply(f"{subject}: {err}") from err

    async def close(self) -> None:
        if self._owns_connection:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()
