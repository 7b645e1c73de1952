"""`/v1/odds/stream`: prices published on NATS reach subscribed WebSocket clients."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from api_support import Api, unique
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


def _ws_url(api: Api) -> str:
    return api.url.replace("http://", "ws://") + "/v1/odds/stream"


def test_odds_reach_subscribers_and_stop_after_unsubscribe(api: Api) -> None:
    market_id = unique("mkt")
    other_market = unique("mkt")

    async def run() -> None:
        nc = await nats.connect(api.cluster.nats_url.split(","))
        try:
            headers = {"Authorization": f"Bearer {api.token('bettor', 'alice')}"}
            async with connect(_ws_url(api), additional_headers=headers) as ws:
                await ws.send(json.dumps({"action": "subscribe", "markets": [market_id]}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "subscribed", "markets": [market_id]}
                await nc.publish(f"odds.ev1.{other_market}", b'{"home": "9.00"}')
                await nc.publish(f"odds.ev1.{market_id}", b'{"home": "2.40"}')
                await nc.flush()
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
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
                await ws.send(json.dumps({"action": "unsubscribe", "markets": [market_id]}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "subscribed", "markets": []}
                await nc.publish(f"odds.ev1.{market_id}", b'{"home": "2.30"}')
                await nc.flush()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)
        finally:
            await nc.close()

    asyncio.run(run())


def test_token_in_query_and_no_token_refused(api: Api) -> None:
    async def run() -> None:
        token = api.token("auditor")
        async with connect(f"{_ws_url(api)}?access_token={token}") as ws:
            await ws.send(json.dumps({"action": "subscribe", "markets": ["m1"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_ws_url(api)):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(run())
