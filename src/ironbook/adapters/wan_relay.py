"""A TCP relay that adds WAN latency: the link between two sites.

    python -m ironbook.bootstrap wan-relay --routes 127.0.0.1:21001=127.0.0.1:22001 \
        --wan-rtt-ms 30

This kernel has no `sch_netem`, so the delay of a long-distance link is made
here, in user space: every chunk read from one end is written to the other
`rtt / 2` later, in both directions, so a request and its answer take one
round trip more than on the local network. Bytes keep their order and the
relay never looks inside them (TLS passes through end to end). Each route
listens on one address and forwards to one target; a connection that the
target refuses, or that either end closes, is closed at the other end too.

Memory is bounded: at most `MAX_QUEUED_CHUNKS` chunks of at most
`CHUNK_BYTES` wait per direction of a connection; a faster sender then waits
(TCP backpressure), as behind a real long link with a full window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("ironbook.wan_relay")

CHUNK_BYTES = 64 * 1024
MAX_QUEUED_CHUNKS = 256
CONNECT_TIMEOUT_S = 5.0
MAX_RTT_MS = 10_000


class RouteError(ValueError):
    """A route that is not `host:port=host:port`."""


@dataclass(frozen=True, slots=True)
class Route:
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    def __str__(self) -> str:
        return f"{self.listen_host}:{self.listen_port}={self.target_host}:{self.target_port}"


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise RouteError(f"{text!r} is not host:port")
    return host, int(port)


def parse_routes(text: str) -> list[Route]:
    """`listen=target,listen=target,...`, each side `host:port`."""
    routes = []
    for part in text.split(","):
        if not part.strip():
            continue
        listen, equals, target = part.partition("=")
        if not equals:
            raise RouteError(f"{part.strip()!r} is not listen_host:port=target_host:port")
        routes.append(Route(*_address(listen), *_address(target)))
    if not routes:
        raise RouteError("no routes given")
    return routes


def format_routes(routes: Sequence[Route]) -> str:
    return ",".join(str(route) for route in routes)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy `reader` to `writer`, each chunk `delay_s` after it was read; at
    end of stream, close `writer` once the chunks before it are written."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED_CHUNKS)

    async def read() -> None:
        while True:
            try:
                chunk = await reader.read(CHUNK_BYTES)
            except OSError:
                chunk = b""
            await queue.put((time.monotonic() + delay_s, chunk))
            if not chunk:
                return

    async def write() -> None:
        try:
            while True:
                due, chunk = await queue.get()
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:
            return
        finally:
            writer.close()

    async with asyncio.TaskGroup() as group:
        reading = group.create_task(read())
        await group.create_task(write())
        reading.cancel()


class WanRelay:
    """Every route's listener, and the connections they carry."""

    def __init__(self, routes: Sequence[Route], rtt_ms: float) -> None:
        if not 0 <= rtt_ms <= MAX_RTT_MS:
            raise RouteError(f"the round-trip time must be 0-{MAX_RTT_MS} ms, got {rtt_ms}")
        self.routes = list(routes)
        self.one_way_s = rtt_ms / 2000
        self.connections = 0
        """Connections relayed so far."""
        self._servers: list[asyncio.Server] = []
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._accept, route),
                route.listen_host,
                route.listen_port,
                reuse_address=True,
            )
            self._servers.append(server)
        log.info(
            "relaying %s with %.1f ms each way", format_routes(self.routes), self.one_way_s * 1000
        )

    @property
    def listening(self) -> list[tuple[str, int]]:
        """The (host, port) each route listens on, in route order (a route
        given port 0 gets a free one)."""
        return [server.sockets[0].getsockname()[:2] for server in self._servers]

    async def _accept(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Owned by `_links` until it ends; `close()` cancels those still open.
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._relay(route, reader, writer)
        finally:
            self._links.discard(task)

    async def _relay(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    route.target_host, route.target_port
                )
        except (OSError, TimeoutError) as err:
            log.debug("route %s: target unreachable: %r", route, err)
            writer.close()
            return
        self.connections += 1
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_pump(reader, upstream_writer, self.one_way_s))
                group.create_task(_pump(upstream_reader, writer, self.one_way_s))
        finally:
            for end in (writer, upstream_writer):
                end.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for link in list(self._links):
            link.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()


async def serve(routes: Sequence[Route], rtt_ms: float, stop: asyncio.Event) -> None:
    relay = WanRelay(routes, rtt_ms)
    await relay.start()
    try:
        await stop.wait()
    finally:
        await relay.close()
