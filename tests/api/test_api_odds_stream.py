"""`/v1/odds/stream`: prices published on NATS reach subscribed WebSocket
clients, by market or by event; a snapshot returns the newest prices from the
ODDS stream; a client that does not read gets conflated prices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any, cast

import httpx
import nats
import nats.errors
import pytest
from api_support import GENEROUS_LIMITS, START_TIMEOUT_S, Api, _wait_ready, unique
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from ironbook.adapters.nats.localproc import PortLease
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.gateway.auth import local_signing_key, mint_token, token_id
from ironbook.services.gateway.odds import (
    ClientRequest,
    OddsHub,
    Watcher,
    odds_frame,
    parse_client_message,
)
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

RECV_TIMEOUT_S = 5


def _ws_url(api: Api) -> str:
    return api.url.replace("http://", "ws://") + "/v1/odds/stream"


def _headers(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token('bettor', 'alice')}"}


def _price(event_id: str, market_id: str, cursor: int, home: str, pad: str = "") -> bytes:
    message = {
        "event_id": event_id,
        "market_id": market_id,
        "status": "open",
        "in_play": False,
        "prices": {"home": home, "away": "3.00"},
        "cursor": cursor,
        "feed_ts_ms": 1,
        "published_ms": 1,
    }
    if pad:
        message["pad"] = pad
    return json.dumps(message).encode()


async def _publish(nc: NatsClient, event_id: str, market_id: str, cursor: int, home: str) -> None:
    await nc.publish(f"odds.{event_id}.{market_id}", _price(event_id, market_id, cursor, home))


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT_S))
    return message


async def _publish_until_delivered(
    nc: NatsClient, ws: ClientConnection, subject: str, payload: bytes
) -> dict[str, Any]:
    """Publish right after "subscribed", and again if nothing arrives: the
    gateway's NATS server has the subscription when it says subscribed, but
    the other servers of the cluster learn of it a moment later, so a price
    published through one of them in that moment reaches nobody (a
    subscriber that must not miss it asks for a snapshot). Prices are state:
    a repeat is harmless. The first frame that arrives."""
    deadline = time.monotonic() + 3 * RECV_TIMEOUT_S
    while True:
        await nc.publish(subject, payload)
        await nc.flush()
        try:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 2))
        except TimeoutError:
            assert time.monotonic() < deadline, f"nothing delivered on {subject}"
            continue
        return frame


def test_odds_reach_subscribers_and_stop_after_unsubscribe(api: Api) -> None:
    market_id = unique("mkt")
    other_market = unique("mkt")

    async def run() -> None:
        nc = await api.cluster.ops.connect("test")
        try:
            headers = {"Authorization": f"Bearer {api.token('bettor', 'alice')}"}
            async with connect(_ws_url(api), additional_headers=headers) as ws:
                await ws.send(json.dumps({"action": "subscribe", "markets": [market_id]}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "subscribed", "markets": [market_id], "events": []}
                await nc.publish(f"odds.ev1.{other_market}", b'{"home": "9.00"}')
                message = await _publish_until_delivered(
                    nc, ws, f"odds.ev1.{market_id}", b'{"home": "2.40"}'
                )
                assert message == {
                    "type": "odds",
                    "market": market_id,
                    "subject": f"odds.ev1.{market_id}",
                    "data": {"home": "2.40"},
                }
                await ws.send(json.dumps({"action": "subscribe", "markets": ["bad.id"]}))
                error = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert error["type"] == "error"
                assert error["code"] == "validation_failed"
                await ws.send("not json")
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "error"
                await ws.send(b'{"action": "subscribe", "markets": ["m1"]}')
                binary = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert binary["code"] == "validation_failed" and "text" in binary["detail"]
                await ws.send(json.dumps({"action": "unsubscribe", "markets": [market_id]}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "subscribed", "markets": [], "events": []}
                await nc.publish(f"odds.ev1.{market_id}", b'{"home": "2.30"}')
                await nc.flush()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
        finally:
            await nc.close()

    asyncio.run(run())


def test_token_by_header_or_subprotocol_never_in_the_query(api: Api) -> None:
    async def subscribed(ws: ClientConnection) -> bool:
        await ws.send(json.dumps({"action": "subscribe", "markets": ["m1"]}))
        return bool(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed")

    async def run() -> None:
        token = api.token("auditor")
        async with connect(
            _ws_url(api), additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            assert await subscribed(ws)
        offered = [Subprotocol(f"ironbook.bearer.{token}"), Subprotocol("ironbook.v1")]
        async with connect(_ws_url(api), subprotocols=offered) as ws:
            assert ws.subprotocol == "ironbook.v1", "the token is never echoed back"
            assert await subscribed(ws)
        for refused_url in (
            f"{_ws_url(api)}?access_token={token}",
            f"{_ws_url(api)}?token={token}",
            _ws_url(api),
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(refused_url):
                    pass
            assert refused.value.response.status_code == 403

    asyncio.run(run())


def test_the_socket_closes_when_its_token_expires(api: Api) -> None:
    async def run() -> None:
        token = api.token("auditor", ttl_s=2)
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(_ws_url(api), additional_headers=headers) as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1008
            assert ws.close_reason == "token expired"

    asyncio.run(run())


def test_the_socket_closes_when_its_token_is_revoked(api: Api) -> None:
    async def run() -> None:
        token = api.token("auditor")
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(_ws_url(api), additional_headers=headers) as ws:
            revoked = await asyncio.to_thread(
                httpx.post,
                f"{api.url}/v1/admin/tokens/{token_id(token)}/revoke",
                headers=api.auth("admin"),
                timeout=10,
            )
            assert revoked.status_code == 200, revoked.text
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1008, "token revoked")

    asyncio.run(run())


def test_websockets_per_principal_are_capped(api: Api) -> None:
    """One worker (`tight_url`) admits 8 sockets per principal (the default)."""
    url = api.tight_url.replace("http://", "ws://") + "/v1/odds/stream"
    headers = {"Authorization": f"Bearer {api.token('auditor', sub='capped')}"}

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(8):
                await stack.enter_async_context(connect(url, additional_headers=headers))
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
            other = {"Authorization": f"Bearer {api.token('auditor', sub='another')}"}
            async with connect(url, additional_headers=other):
                pass
        async with connect(url, additional_headers=headers):
            pass  # closed sockets are counted out

    asyncio.run(run())


@pytest.mark.slow
def test_subscribe_by_event_delivers_each_price_once(api: Api) -> None:
    event_id, other_event = unique("ev"), unique("ev")
    market_a, market_b = unique("mkt"), unique("mkt")

    async def run() -> None:
        nc = await api.cluster.ops.connect("test")
        try:
            async with connect(_ws_url(api), additional_headers=_headers(api)) as ws:
                await ws.send(json.dumps({"action": "subscribe", "events": [event_id]}))
                assert await _recv(ws) == {
                    "type": "subscribed",
                    "markets": [],
                    "events": [event_id],
                }
                # Watched twice (by event and by market): still one frame per price.
                await ws.send(json.dumps({"action": "subscribe", "markets": [market_a]}))
                assert (await _recv(ws))["markets"] == [market_a]
                await nc.publish(
                    f"odds.{other_event}.{market_b}", _price(other_event, market_b, 1, "9.00")
                )
                first = await _publish_until_delivered(
                    nc, ws, f"odds.{event_id}.{market_a}", _price(event_id, market_a, 2, "2.10")
                )
                assert first["type"] == "odds" and first["market"] == market_a
                assert first["subject"] == f"odds.{event_id}.{market_a}"
                assert first["data"]["prices"]["home"] == "2.10"
                await nc.publish(
                    f"odds.{event_id}.{market_b}", _price(event_id, market_b, 3, "4.00")
                )
                await nc.flush()
                second = await _recv(ws)
                assert (second["market"], second["data"]["cursor"]) == (market_b, 3)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
                await ws.send(json.dumps({"action": "unsubscribe", "events": [event_id]}))
                assert await _recv(ws) == {
                    "type": "subscribed",
                    "markets": [market_a],
                    "events": [],
                }
                await nc.publish(
                    f"odds.{event_id}.{market_b}", _price(event_id, market_b, 4, "4.20")
                )
                await nc.publish(
                    f"odds.{event_id}.{market_a}", _price(event_id, market_a, 5, "2.20")
                )
                await nc.flush()
                assert (await _recv(ws))["data"]["cursor"] == 5
                await ws.send(json.dumps({"action": "subscribe", "events": []}))
                assert (await _recv(ws))["code"] == "validation_failed"
                too_many = [unique("ev") for _ in range(21)]
                await ws.send(json.dumps({"action": "subscribe", "events": too_many}))
                assert (await _recv(ws))["code"] == "validation_failed"
        finally:
            await nc.close()

    asyncio.run(run())


@pytest.mark.slow
def test_snapshot_returns_the_newest_prices_after_reconnect(api: Api) -> None:
    event_id = unique("ev")
    markets = [unique("mkt") for _ in range(3)]

    async def run() -> None:
        nc = await api.cluster.ops.connect("test")
        try:
            for cursor, home in enumerate(("2.00", "2.10", "2.20")):
                for market_id in markets:
                    subject = f"odds.{event_id}.{market_id}"
                    await nc.publish(subject, _price(event_id, market_id, cursor, home))
            await nc.flush()
            request = {"action": "snapshot", "events": [event_id]}
            async with connect(_ws_url(api), additional_headers=_headers(api)) as ws:
                deadline = time.monotonic() + RECV_TIMEOUT_S
                while True:  # the stream stores what was published, asynchronously
                    await ws.send(json.dumps(request))
                    snapshot = await _recv(ws)
                    assert snapshot["type"] == "snapshot"
                    if len(snapshot["odds"]) == 3 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert sorted(f["market"] for f in snapshot["odds"]) == sorted(markets)
                assert {f["data"]["prices"]["home"] for f in snapshot["odds"]} == {"2.20"}
            # A new connection (a client reconnecting) asks by market.
            async with connect(_ws_url(api), additional_headers=_headers(api)) as ws:
                wanted = [markets[0], unique("unknown")]
                await ws.send(json.dumps({"action": "snapshot", "markets": wanted}))
                snapshot = await _recv(ws)
                assert [f["market"] for f in snapshot["odds"]] == [markets[0]]
                assert snapshot["odds"][0]["subject"] == f"odds.{event_id}.{markets[0]}"
                assert snapshot["odds"][0]["data"]["cursor"] == 2
                await ws.send(json.dumps({"action": "snapshot", "markets": [unique("none")]}))
                assert await _recv(ws) == {"type": "snapshot", "odds": []}
                # Requests are rate limited per connection (burst 50, then 10/s).
                flood = json.dumps({"action": "snapshot", "markets": [unique("none")]})
                for _ in range(60):
                    await ws.send(flood)
                replies = [(await _recv(ws))["type"] for _ in range(60)]
                assert "snapshot" in replies
                assert "error" in replies
        finally:
            await nc.close()

    asyncio.run(run())


@pytest.mark.slow
def test_a_client_that_does_not_read_gets_the_newest_price_not_a_backlog(api: Api) -> None:
    """Publishes ~24 MB of prices for one market while the client reads
    nothing: afterwards it receives far fewer frames than were published (the
    rest were conflated in the worker, which held one pending frame), and the
    last one is the newest price."""
    event_id, market_id = unique("ev"), unique("mkt")
    subject = f"odds.{event_id}.{market_id}"
    published = 3_000
    pad = "x" * 8_000

    async def run() -> None:
        nc = await api.cluster.ops.connect("test")
        try:
            async with connect(_ws_url(api), additional_headers=_headers(api), max_queue=4) as ws:
                await ws.send(json.dumps({"action": "subscribe", "markets": [market_id]}))
                assert (await _recv(ws))["type"] == "subscribed"
                for cursor in range(published):
                    await nc.publish(subject, _price(event_id, market_id, cursor, "2.00", pad))
                    if cursor % 100 == 99:
                        await nc.flush()
                await nc.flush()
                await asyncio.sleep(1.0)  # the worker conflates while nobody reads
                last = published
                await nc.publish(subject, _price(event_id, market_id, last, "9.00"))
                await nc.flush()
                received = 0
                deadline = time.monotonic() + 30
                while True:
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    except TimeoutError:
                        # A worker busy past its NATS buffer may have dropped the
                        # marker: publish it again (prices are state; repeats are fine).
                        await nc.publish(subject, _price(event_id, market_id, last, "9.00"))
                        await nc.flush()
                        assert time.monotonic() < deadline, "the newest price never arrived"
                        continue
                    received += 1
                    if frame["data"]["cursor"] == last:
                        break
                assert frame["data"]["prices"]["home"] == "9.00"
                assert received < published // 2, received
        finally:
            await nc.close()

    asyncio.run(run())
    deadline = time.monotonic() + 10  # counts are written at most once a second
    while True:
        metrics = httpx.get(api.metrics_url, timeout=10).text
        conflated = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("ironbook_odds_frames_conflated_total ")
        ]
        if (conflated and conflated[0] > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert conflated and conflated[0] > 0, "conflation is visible to operators"


# The pieces, without a cluster.


def test_a_watcher_holds_one_pending_frame_per_market_and_skips_repeats() -> None:
    watcher = Watcher()
    watcher.markets.add("m1")
    watcher.events.add("e2")
    for cursor in range(1_000):
        watcher.offer("odds.e1.m1", f"frame-{cursor}")
    frame = "same"
    watcher.offer("odds.e2.m9", frame)
    watcher.offer("odds.e2.m9", frame)  # the same message through a second subscription
    assert len(watcher.latest) == 2
    assert watcher.conflated == 999
    assert watcher.take() == ["frame-999", "same"]
    assert not watcher.ready.is_set()
    watcher.offer("odds.e1.m1", "frame-new")
    watcher.markets.discard("m1")
    watcher.forget_unwatched()
    assert watcher.latest == {} and set(watcher.offered) == {"odds.e2.m9"}


def test_odds_frames_embed_the_feed_message_once_checked() -> None:
    data = _price("e1", "m1", 7, "2.50")
    frame = odds_frame("odds.e1.m1", "m1", data)
    assert frame is not None
    assert json.loads(frame) == {
        "type": "odds",
        "market": "m1",
        "subject": "odds.e1.m1",
        "data": json.loads(data),
    }
    assert odds_frame("odds.e1.m1", "m1", b"not json") is None
    assert odds_frame("odds.e1.m1", "m1", b"[1, 2]") is None
    assert odds_frame("odds.e1.m1", "m1", b'{"home": "\xff"}') is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"action": "subscribe", "markets": ["m1"]}', ("subscribe", ["m1"], [])),
        ('{"action": "snapshot", "events": ["e1"]}', ("snapshot", [], ["e1"])),
        (
            '{"action": "unsubscribe", "markets": ["m"], "events": ["e"]}',
            ("unsubscribe", ["m"], ["e"]),
        ),
        ("not json", "not JSON"),
        ('{"action": "subscribe"}', "give a non-empty list of markets or events"),
        (
            '{"action": "buy", "markets": ["m1"]}',
            "action must be subscribe, unsubscribe or snapshot",
        ),
        ('{"action": "subscribe", "markets": ["a.b"]}', "a market or event id must be"),
        ('{"action": "subscribe", "markets": "m1"}', "expected"),
        ('{"action": "subscribe", "markets": ["m1"], "x": 1}', "expected"),
        ("x" * 20_000, "message too large"),
    ],
)
def test_client_messages_are_parsed_or_refused_with_a_reason(text: str, expected: object) -> None:
    parsed = parse_client_message(text)
    if isinstance(expected, tuple):
        assert isinstance(parsed, ClientRequest)
        assert (parsed.action, parsed.markets, parsed.events) == expected
    else:
        assert isinstance(parsed, str) and parsed.startswith(str(expected)), parsed


@pytest.mark.slow
def test_the_real_feed_reaches_subscribers_and_snapshots_survive_a_worker_restart(
    tmp_path: Path,
) -> None:
    """Simulator -> ingester -> ledger -> odds.<event>.<market> -> gateway ->
    WebSocket, on a cluster of its own (the feed adds markets that other API
    tests would list). A restarted worker still answers snapshots."""
    ports = PortLease()
    (port,) = ports.take(1)
    cluster = LocalCluster(
        tmp_path / "cluster",
        gateway=GatewayOptions(port=port, workers=1, env=GENEROUS_LIMITS),
        feed=FeedOptions(rate=20, seed=3),
    )
    url = f"ws://127.0.0.1:{port}/v1/odds/stream"
    try:
        cluster.start(timeout_ms=START_TIMEOUT_S * 1000)
        asyncio.run(cluster.wait_leaders(timeout_ms=START_TIMEOUT_S * 1000))
        _wait_ready(f"http://127.0.0.1:{port}", time.monotonic() + START_TIMEOUT_S)
        secret = local_signing_key(cluster.data_dir)
        headers = {"Authorization": f"Bearer {mint_token(secret, role='auditor')}"}

        async def first_price() -> tuple[str, str]:
            nc = await cluster.ops.connect("test")
            try:
                subscription = await nc.subscribe("odds.>")
                msg = await subscription.next_msg(timeout=START_TIMEOUT_S)
                _, event_id, market_id = msg.subject.split(".")
                return event_id, market_id
            finally:
                await nc.close()

        async def watch(event_id: str) -> dict[str, Any]:
            async with connect(url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"action": "subscribe", "events": [event_id]}))
                assert (await _recv(ws))["events"] == [event_id]
                live = await asyncio.wait_for(_next_odds(ws), 30)
                assert await _snapshot(ws, {"events": [event_id]})
                return live

        event_id, _ = asyncio.run(first_price())
        live = asyncio.run(watch(event_id))
        data = live["data"]
        assert set(data) == {
            "event_id",
            "market_id",
            "status",
            "in_play",
            "display",
            "prices",
            "cursor",
            "feed_ts_ms",
            "published_ms",
        }
        assert data["event_id"] == event_id and live["subject"].startswith(f"odds.{event_id}.")
        assert data["feed_ts_ms"] <= data["published_ms"]

        worker = cluster.gateways["gw-1"]
        worker.kill()
        worker.start()
        _wait_ready(f"http://127.0.0.1:{port}", time.monotonic() + START_TIMEOUT_S)

        async def snapshot_after_restart() -> list[dict[str, Any]]:
            async with connect(url, additional_headers=headers) as ws:
                return await _snapshot(ws, {"events": [event_id]})

        odds = asyncio.run(snapshot_after_restart())
        assert {f["subject"].split(".")[1] for f in odds} == {event_id}
        assert all(f["data"]["cursor"] >= 1 for f in odds)
    finally:
        cluster.stop()
        ports.release()


async def _snapshot(ws: ClientConnection, names: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The snapshot's frames, asked again (bounded) while empty: the stream
    stores a publish asynchronously and any replica may answer."""
    deadline = time.monotonic() + 10
    while True:
        await ws.send(json.dumps({"action": "snapshot", **names}))
        while (reply := await _recv(ws))["type"] != "snapshot":
            assert reply["type"] == "odds", reply
        odds: list[dict[str, Any]] = reply["odds"]
        if odds or time.monotonic() > deadline:
            return odds
        await asyncio.sleep(0.3)


async def _next_odds(ws: ClientConnection) -> dict[str, Any]:
    while (frame := await _recv(ws))["type"] != "odds":
        pass
    return frame


class _RefusingNats:
    """A NATS connection that is away."""

    async def subscribe(self, *args: object, **kwargs: object) -> None:
        raise nats.errors.ConnectionClosedError

    async def flush(self, **kwargs: object) -> None:
        return None


def test_a_subscription_nats_refuses_leaves_nothing_behind() -> None:
    async def run() -> None:
        hub = OddsHub(cast(NatsClient, _RefusingNats()))
        watcher = Watcher()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await hub.watch(watcher, "market", "m1")
        await hub.unwatch(watcher, "market", "m1")
        assert not watcher.markets
        assert not hub._watchers and not hub._subscriptions

    asyncio.run(run())
