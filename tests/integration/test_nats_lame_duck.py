"""A `connect_nats` connection and a server that goes away: a request in
flight ends as soon as the connection drops (not at its timeout), and a
server in lame-duck mode is left at once, while it still serves, rather than
when it closes its clients (after its grace period) or stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook.adapters.nats.provision import RequestDropped, close_nats, connect_nats, request
from ironbook.adapters.nats.server import LocalNatsCluster

SUBJECT = "test.silent"
UNANSWERED_TIMEOUT_S = 600.0
"""A request nobody answers; it must end long before this."""
BOUND_S = 60.0


def _node_of(cluster: LocalNatsCluster, nc: NatsClient) -> str:
    url = nc.connected_url
    assert url is not None
    return next(n for n, node in cluster.nodes.items() if node.ports.client == url.port)


async def _in_flight(cluster: LocalNatsCluster) -> tuple[NatsClient, NatsClient, str]:
    """A silent responder on one server, and a connection on another."""
    silent = await connect_nats(cluster.url, name="silent")
    await silent.subscribe(SUBJECT)  # takes requests, never answers
    await silent.flush()
    for _ in range(20):
        asker = await connect_nats(cluster.urls, name="asker")
        if _node_of(cluster, asker) != _node_of(cluster, silent):
            return silent, asker, _node_of(cluster, asker)
        await close_nats(asker)
    raise AssertionError("never connected to another server than the responder's")


async def _unanswered(asker: NatsClient) -> Exception | Msg:
    """How a request to the silent responder ends."""
    try:
        return await request(asker, SUBJECT, b"?", timeout_s=UNANSWERED_TIMEOUT_S)
    except Exception as error:
        return error


async def _ended(asked: asyncio.Task[Exception | Msg], asker: NatsClient) -> Exception | Msg:
    try:
        return await asyncio.wait_for(asked, BOUND_S)
    except TimeoutError:
        state = f"connected {asker.is_connected} to {asker.connected_url}, stats {asker.stats}"
        message = f"the request was still in flight after {BOUND_S} s; {state}"
        raise AssertionError(message) from None


def test_a_request_in_flight_ends_when_its_server_is_killed(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        silent, asker, node = await _in_flight(nats_cluster)
        try:
            async with asyncio.TaskGroup() as tasks:
                asked = tasks.create_task(_unanswered(asker))
                await asker.flush()
                await asyncio.sleep(0.2)
                assert not asked.done()
                await asyncio.to_thread(nats_cluster.kill_node, node)
                assert isinstance(await _ended(asked, asker), RequestDropped)
        finally:
            await close_nats(asker)
            await close_nats(silent)

    asyncio.run(scenario())


def test_a_server_in_lame_duck_mode_is_left_while_it_still_serves(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        silent, asker, node = await _in_flight(nats_cluster)
        try:
            async with asyncio.TaskGroup() as tasks:
                asked = tasks.create_task(_unanswered(asker))
                await asker.flush()
                await asyncio.sleep(0.2)
                await asyncio.to_thread(nats_cluster.lame_duck, node)
                assert isinstance(await _ended(asked, asker), RequestDropped)
            deadline = time.monotonic() + BOUND_S
            while not asker.is_connected or _node_of(nats_cluster, asker) == node:
                assert time.monotonic() < deadline, "the connection stayed on the lame duck"
                await asyncio.sleep(0.05)
            # Left on the server's word, not cut off: the lame duck still
            # holds its clients for its grace period (10 s) and serves.
            status, _ = await asyncio.to_thread(nats_cluster.node(node).monitor, "/varz")
            assert status == 200
            assert nats_cluster.node(node).process.is_running()
            reply_to_self = await asker.subscribe("test.echo", cb=_echo(asker))
            answer = await request(asker, "test.echo", b"!", timeout_s=BOUND_S)
            assert answer.data == b"!"
            await reply_to_self.unsubscribe()
        finally:
            await close_nats(asker)
            await close_nats(silent)

    asyncio.run(scenario())


def _echo(nc: NatsClient) -> Callable[[Msg], Awaitable[None]]:
    async def answer(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    return answer
