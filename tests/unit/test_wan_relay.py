"""The WAN relay on real loopback sockets: bytes arrive whole and in order,
each direction at least half the round-trip time late, closes propagate, and
bad routes are refused. Only lower bounds on time are asserted: a busy
machine can make a relay slower, never faster."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ironbook.adapters.wan_relay import Route, RouteError, WanRelay, format_routes, parse_routes

LOOPBACK = "127.0.0.1"
RTT_MS = 60


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, LOOPBACK, 0)


async def _relay_to(port: int, rtt_ms: float = RTT_MS) -> WanRelay:
    relay = WanRelay([Route(LOOPBACK, 0, LOOPBACK, port)], rtt_ms)
    await relay.start()
    return relay


def test_routes_parse_and_print_back() -> None:
    text = "127.0.0.1:21001=127.0.0.1:22001,127.0.0.1:21002=10.0.0.2:22002"
    routes = parse_routes(text)
    assert routes[1] == Route("127.0.0.1", 21002, "10.0.0.2", 22002)
    assert format_routes(routes) == text


@pytest.mark.parametrize(
    "text",
    ["", "127.0.0.1:1", "127.0.0.1:1=127.0.0.1", "a:1=b:99999", "host=host:2", ":1=b:2"],
)
def test_bad_routes_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(RouteError):
        parse_routes(text)


def test_a_negative_or_huge_round_trip_is_refused() -> None:
    with pytest.raises(RouteError):
        WanRelay([Route(LOOPBACK, 0, LOOPBACK, 1)], -1)
    with pytest.raises(RouteError):
        WanRelay([Route(LOOPBACK, 0, LOOPBACK, 1)], 60_000)


def test_an_echo_through_the_relay_takes_at_least_the_round_trip() -> None:
    async def scenario() -> None:
        server = await _echo_server()
        relay = await _relay_to(server.sockets[0].getsockname()[1])
        try:
            host, port = relay.listening[0]
            reader, writer = await asyncio.open_connection(host, port)
            rounds_s = []
            for _ in range(3):
                started = time.monotonic()
                writer.write(b"ping")
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
                rounds_s.append(time.monotonic() - started)
            writer.close()
            assert min(rounds_s) >= RTT_MS / 1000
            assert relay.connections == 1
        finally:
            await relay.close()
            server.close()

    asyncio.run(scenario())


def test_bulk_data_arrives_whole_and_in_order_both_ways() -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def scenario() -> None:
        server = await _echo_server()
        relay = await _relay_to(server.sockets[0].getsockname()[1], rtt_ms=10)
        try:
            reader, writer = await asyncio.open_connection(*relay.listening[0])

            async def send() -> None:
                for offset in range(0, len(payload), 100_000):
                    writer.write(payload[offset : offset + 100_000])
                    await writer.drain()

            async with asyncio.TaskGroup() as group:
                group.create_task(send())
                echoed = group.create_task(asyncio.wait_for(reader.readexactly(len(payload)), 60))
            assert echoed.result() == payload
            writer.close()
        finally:
            await relay.close()
            server.close()

    asyncio.run(scenario())


def test_a_close_at_one_end_reaches_the_other() -> None:
    async def scenario() -> None:
        closed = asyncio.Event()

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye")
            await writer.drain()
            writer.close()
            closed.set()

        server = await asyncio.start_server(hang_up, LOOPBACK, 0)
        relay = await _relay_to(server.sockets[0].getsockname()[1])
        try:
            reader, writer = await asyncio.open_connection(*relay.listening[0])
            assert await asyncio.wait_for(reader.read(), 10) == b"bye"  # then end of stream
            assert closed.is_set()
            writer.close()
        finally:
            await relay.close()
            server.close()

    asyncio.run(scenario())


def test_an_unreachable_target_closes_the_connection() -> None:
    async def scenario() -> None:
        probe = await asyncio.start_server(lambda r, w: None, LOOPBACK, 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        relay = await _relay_to(port)
        try:
            reader, writer = await asyncio.open_connection(*relay.listening[0])
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            assert relay.connections == 0
        finally:
            await relay.close()

    asyncio.run(scenario())
