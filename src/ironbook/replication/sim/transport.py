"""The simulated command transport, modelled on NATS request/reply with a
queue group: a batch request goes to one random current subscriber (a
replica that is leading, or believes it is), which sees each command as its
own request; the replies travel back together once every command has one.
With no subscriber at all the client hears "no responders" at once;
otherwise a lost request or reply is a timeout."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence

from ironbook.replication.families import Family
from ironbook.replication.interfaces import (
    InboundRequest,
    NoResponders,
    RequestInbox,
    RequestTimeout,
)
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.network import Network
from ironbook.replication.wire import RetryReply, encode_reply

ReplyCallback = Callable[[list[bytes] | None], None]
"""Receives the replies of a batch, or None for "no responders"."""

_OVERLOADED = encode_reply(RetryReply(reason="overloaded"))


class _BatchReply:
    """Collects the replies to one batch request; sends them back together."""

    __slots__ = ("_network", "_on_reply", "_remaining", "_replies", "_server")

    def __init__(self, size: int, server: Host, network: Network, on_reply: ReplyCallback) -> None:
        self._replies: list[bytes] = [b""] * size
        self._remaining = size
        self._server = server
        self._network = network
        self._on_reply = on_reply

    def fill(self, index: int, payload: bytes) -> None:
        if self._replies[index]:
            return
        self._replies[index] = payload
        self._remaining -= 1
        if self._remaining == 0:
            replies, on_reply = self._replies, self._on_reply
            self._network.deliver(self._server.name, "clients", lambda: on_reply(replies))


class SimRequest:
    """One command of a batch as the serving replica sees it (implements
    `InboundRequest`)."""

    __slots__ = ("_batch", "_family", "_index", "_payload", "_server")

    def __init__(
        self, payload: bytes, family: Family, server: Host, batch: _BatchReply, index: int
    ) -> None:
        self._payload = payload
        self._family = family
        self._server = server
        self._batch = batch
        self._index = index

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def family(self) -> Family:
        return self._family

    async def respond(self, payload: bytes) -> None:
        try:
            await self._server.gate()
        except HostDown:
            return
        self._batch.fill(self._index, payload)

    def shed(self) -> None:
        self._batch.fill(self._index, _OVERLOADED)


class RequestBus:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        network: Network,
        rng: random.Random,
        *,
        inbox_capacity: int,
    ) -> None:
        self._loop = loop
        self._network = network
        self._rng = rng
        self._inbox_capacity = inbox_capacity
        self._subscribers: list[SimInbox] = []
        self.shed = 0
        """Commands answered "overloaded" because an inbox was full."""

    def subscribe(self, inbox: SimInbox) -> None:
        self._subscribers.append(inbox)

    def unsubscribe(self, inbox: SimInbox) -> None:
        if inbox in self._subscribers:
            self._subscribers.remove(inbox)

    def drop_host(self, host: Host) -> None:
        """A crashed host's connection closes: its subscriptions vanish."""
        for inbox in [s for s in self._subscribers if s.host is host]:
            inbox.discard()

    def subscriber_hosts(self) -> list[str]:
        return [inbox.host.name for inbox in self._subscribers]

    def route(
        self, client: Host, family: Family, payloads: Sequence[bytes], on_reply: ReplyCallback
    ) -> None:
        """A batch request reached the NATS server: hand it to one subscriber."""
        if not self._subscribers:
            self._network.deliver(client.name, "clients", lambda: on_reply(None))
            return
        inbox = (
            self._subscribers[0]
            if len(self._subscribers) == 1
            else self._rng.choice(self._subscribers)
        )
        if self._network.lost(inbox.host.name):
            return
        server = inbox.host
        batch = _BatchReply(len(payloads), server, self._network, on_reply)
        requests = [
            SimRequest(payload, family, server, batch, index)
            for index, payload in enumerate(payloads)
        ]
        self._loop.call_later(self._network.latency_s(server.name, "clients"), inbox.push, requests)


class SimInbox:
    """Implements `interfaces.RequestInbox` for one listening replica."""

    def __init__(self, bus: RequestBus, host: Host, capacity: int) -> None:
        self._bus = bus
        self.host = host
        self._capacity = capacity
        self._queue: deque[SimRequest] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def push(self, requests: list[SimRequest]) -> None:
        """A batch arrives; what would overflow the inbox is answered
        "retry: overloaded" at once, as the NATS inbox does."""
        if self._closed or not self.host.alive:
            return
        room = max(0, self._capacity - len(self._queue))
        self._queue.extend(requests[:room])
        for request in requests[room:]:
            self._bus.shed += 1
            request.shed()
        if room:
            self._wake()

    def discard(self) -> None:
        self._closed = True
        self._bus.unsubscribe(self)
        self._queue.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[InboundRequest]:
        await self.host.gate()
        if not self._queue and wait_ms > 0 and not self._closed:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            timer = loop.call_later(wait_ms / 1000, self._wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            await self.host.gate()
        count = min(max_requests, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    async def close(self) -> None:
        self.discard()


class SimRequestServer:
    """Implements `interfaces.RequestServer` for one replica host."""

    def __init__(self, bus: RequestBus, host: Host, *, inbox_capacity: int) -> None:
        self._bus = bus
        self._host = host
        self._capacity = inbox_capacity

    async def listen(self) -> RequestInbox:
        await self._host.gate()
        inbox = SimInbox(self._bus, self._host, self._capacity)
        self._bus.subscribe(inbox)
        return inbox


class SimCommandTransport:
    """Implements `interfaces.CommandTransport` for one client host (the
    simulated cluster has one partition)."""

    def __init__(self, bus: RequestBus, network: Network, host: Host) -> None:
        self._bus = bus
        self._network = network
        self._host = host

    async def request(
        self, partition: int, family: Family, payloads: Sequence[bytes], *, timeout_ms: int
    ) -> list[bytes]:
        if partition != 0:
            raise ValueError(f"the simulated cluster has no partition {partition}")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[list[bytes] | _Timeout | None] = loop.create_future()

        def on_reply(data: list[bytes] | _Timeout | None) -> None:
            if not reply.done():
                reply.set_result(data)

        client = self._host
        batch = list(payloads)
        self._network.deliver(
            client.name, "clients", lambda: self._bus.route(client, family, batch, on_reply)
        )
        timer = loop.call_later(timeout_ms / 1000, on_reply, _TIMEOUT)
        try:
            data = await reply
        finally:
            timer.cancel()
        if isinstance(data, _Timeout):
            raise RequestTimeout(f"no reply within {timeout_ms} ms")
        if data is None:
            raise NoResponders("nobody serves the partition")
        return data

    async def close(self) -> None:
        """Nothing to release: the simulated network is the run's."""


class _Timeout:
    pass


_TIMEOUT = _Timeout()
