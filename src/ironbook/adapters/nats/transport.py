"""The command transport on NATS request/reply.

Clients publish a command to `ironbook.cmd.<partition>` with a reply inbox;
only the partition's leader subscribes (in a queue group, so a message is
handed to one subscriber even in the instant two replicas both think they
lead — the log's fencing decides which of them is right).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ironbook.replication.interfaces import NoResponders, RequestTimeout, TransportError
from ironbook.replication.wire import RetryReply, encode_reply

DEFAULT_MAX_PENDING_REQUESTS = 20_000
_QUEUE_GROUP = "leader"
_OVERLOADED = encode_reply(RetryReply(reason="overloaded"))


def command_subject(partition: int) -> str:
    return f"ironbook.cmd.{partition}"


class _NatsRequest:
    __slots__ = ("_msg", "_nc")

    def __init__(self, nc: NatsClient, msg: Msg) -> None:
        self._nc = nc
        self._msg = msg

    @property
    def payload(self) -> bytes:
        return self._msg.data

    async def respond(self, payload: bytes) -> None:
        if not self._msg.reply:
            return
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.publish(self._msg.reply, payload)


class NatsInbox:
    """Requests received while leading, in a bounded queue: when it is full
    the request is answered "retry: overloaded" at once instead of queueing."""

    def __init__(self, nc: NatsClient, max_pending: int) -> None:
        self._nc = nc
        self._queue: asyncio.Queue[_NatsRequest] = asyncio.Queue(maxsize=max_pending)
        self._subscription: Subscription | None = None

    async def start(self, subject: str) -> None:
        self._subscription = await self._nc.subscribe(subject, queue=_QUEUE_GROUP, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        request = _NatsRequest(self._nc, msg)
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            await request.respond(_OVERLOADED)

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[_NatsRequest]:
        queue = self._queue
        if queue.empty():
            try:
                first = await asyncio.wait_for(queue.get(), timeout=wait_ms / 1000)
            except TimeoutError:
                return []
            batch = [first]
        else:
            batch = [queue.get_nowait()]
        while len(batch) < max_requests and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._subscription.unsubscribe()
            self._subscription = None


class NatsRequestServer:
    def __init__(
        self, nc: NatsClient, partition: int, *, max_pending: int = DEFAULT_MAX_PENDING_REQUESTS
    ) -> None:
        self._nc = nc
        self._subject = command_subject(partition)
        self._max_pending = max_pending

    async def listen(self) -> NatsInbox:
        inbox = NatsInbox(self._nc, self._max_pending)
        await inbox.start(self._subject)
        return inbox


class NatsRequestClient:
    def __init__(self, nc: NatsClient, partition: int) -> None:
        self._nc = nc
        self._subject = command_subject(partition)

    async def request(self, payload: bytes, *, timeout_ms: int) -> bytes:
        try:
            reply = await self._nc.request(self._subject, payload, timeout=timeout_ms / 1000)
        except nats.errors.NoRespondersError as err:
            raise NoResponders(self._subject) from err
        except nats.errors.TimeoutError as err:
            raise RequestTimeout(f"{self._subject}: no reply in {timeout_ms} ms") from err
        except (nats.errors.Error, OSError) as err:
            raise TransportError(f"{self._subject}: {err!r}") from err
        return reply.data
