"""The simulated command transport, modelled on NATS request/reply with a
queue group: a request goes to one random current subscriber (a replica that
is leading, or believes it is); with no subscriber at all the client hears
"no responders" at once; otherwise a lost request or reply is a timeout."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence

from ironbook.replication.interfaces import (
    InboundRequest,
    NoResponders,
    RequestInbox,
    RequestTimeout,
)
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.network import Network

ReplyCallback = Callable[[bytes | None], None]
"""Receives the reply bytes, or None for "no responders"."""


class SimRequest:
    """A request as the serving replica sees it (implements `InboundRequest`)."""

    __slots__ = ("_network", "_on_reply", "_payload", "_server")

    def __init__(
        self, payload: bytes, server: Host, network: Network, on_reply: ReplyCallback
    ) -> None:
        self._payload = payload
        self._server = server
        self._network = network
        self._on_reply = on_reply

    @property
    def payload(self) -> bytes:
        return self._payload

    async def respond(self, payload: bytes) -> None:
        try:
            await self._server.gate()
        except HostDown:
            return
        on_reply = self._on_reply
        self._network.deliver(self._server.name, "clients", lambda: on_reply(payload))


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
        self.dropped_full = 0

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

    def route(self, client: Host, payload: bytes, on_reply: ReplyCallback) -> None:
        """A request reached the NATS server: hand it to one subscriber."""
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
        request = SimRequest(payload, server, self._network, on_reply)
        self._loop.call_later(self._network.latency_s(server.name, "clients"), inbox.push, request)


class SimInbox:
    """Implements `interfaces.RequestInbox` for one listening replica."""

    def __init__(self, bus: RequestBus, host: Host, capacity: int) -> None:
        self._bus = bus
        self.host = host
        self._capacity = capacity
        self._queue: deque[SimRequest] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def push(self, request: SimRequest) -> None:
        if self._closed or not self.host.alive:
            return
        if len(self._queue) >= self._capacity:
            self._bus.dropped_full += 1
            return
        self._queue.append(request)
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


class SimRequestClient:
    """Implements `interfaces.RequestClient` for one client host."""

    def __init__(self, bus: RequestBus, network: Network, host: Host) -> None:
        self._bus = bus
        self._network = network
        self._host = host

    async def request(self, payload: bytes, *, timeout_ms: int) -> bytes:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes | _Timeout | None] = loop.create_future()

        def on_reply(data: bytes | _Timeout | None) -> None:
            if not reply.done():
                reply.set_result(data)

        client = self._host
        self._network.deliver(
            client.name, "clients", lambda: self._bus.route(client, payload, on_reply)
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


class _Timeout:
    pass


_TIMEOUT = _Timeout()
