"""`GET /v1/odds/stream`: live odds over WebSocket, bridged from NATS.

The feed (issue 6) publishes each market's prices on `odds.<event>.<market>`.
A worker holds one NATS subscription per market that at least one of its
clients watches (`odds.*.<market>`) and fans each message out to them.

Odds are state, not a log: a client that reads slower than prices change gets
the *latest* price of each market (conflation), never an unbounded queue. A
connection may watch at most `MAX_MARKETS_PER_CONNECTION` markets.

Protocol (JSON text frames):
    client: {"action": "subscribe" | "unsubscribe", "markets": ["m1", ...]}
    server: {"type": "subscribed", "markets": [...]}
            {"type": "odds", "market": "m1", "subject": "odds.e1.m1", "data": {...}}
            {"type": "error", "code": "validation_failed", "detail": "..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from fastapi import WebSocket, WebSocketDisconnect
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ironbook.services.gateway import problems as p

log = logging.getLogger("ironbook.gateway.odds")

MAX_MARKETS_PER_CONNECTION = 100
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
_FORBIDDEN_SUBJECT_CHARS = frozenset(".*> \t\r\n")


def odds_subject(market_id: str) -> str:
    return f"odds.*.{market_id}"


def valid_market_id(market_id: str) -> bool:
    return (
        0 < len(market_id) <= 64
        and market_id.isascii()
        and market_id.isprintable()
        and not _FORBIDDEN_SUBJECT_CHARS.intersection(market_id)
    )


class Watcher:
    """One connection's view: the latest undelivered message per market."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, object]] = {}
        self.ready = asyncio.Event()
        self.markets: set[str] = set()
        self.conflated = 0

    def offer(self, market_id: str, message: dict[str, object]) -> None:
        if market_id in self.latest:
            self.conflated += 1
        self.latest[market_id] = message
        self.ready.set()

    def take(self) -> list[dict[str, object]]:
        messages = list(self.latest.values())
        self.latest.clear()
        self.ready.clear()
        return messages


class OddsHub:
    """Per worker: NATS subscriptions shared by every watcher of a market."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._watchers: dict[str, set[Watcher]] = {}
        self._subscriptions: dict[str, Subscription] = {}

    async def watch(self, watcher: Watcher, market_id: str) -> None:
        watchers = self._watchers.setdefault(market_id, set())
        watchers.add(watcher)
        watcher.markets.add(market_id)
        if market_id not in self._subscriptions:
            self._subscriptions[market_id] = await self._nc.subscribe(
                odds_subject(market_id), cb=self._deliver_to(market_id)
            )
            # The server has registered the subscription once a flush returns:
            # "subscribed" must mean that the next price published arrives.
            with contextlib.suppress(nats.errors.Error):
                await self._nc.flush(timeout=2)

    async def unwatch(self, watcher: Watcher, market_id: str) -> None:
        watcher.markets.discard(market_id)
        watcher.latest.pop(market_id, None)
        watchers = self._watchers.get(market_id)
        if watchers is None:
            return
        watchers.discard(watcher)
        if not watchers:
            del self._watchers[market_id]
            subscription = self._subscriptions.pop(market_id, None)
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def unwatch_all(self, watcher: Watcher) -> None:
        for market_id in list(watcher.markets):
            await self.unwatch(watcher, market_id)

    def _deliver_to(self, market_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            try:
                data = json.loads(msg.data)
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("dropped a non-JSON odds message on %s", msg.subject)
                return
            message: dict[str, object] = {
                "type": "odds",
                "market": market_id,
                "subject": msg.subject,
                "data": data,
            }
            for watcher in self._watchers.get(market_id, ()):
                watcher.offer(market_id, message)

        return deliver


def parse_client_message(text: str) -> tuple[str, list[str]] | str:
    """(action, markets), or an error detail."""
    if len(text) > MAX_CLIENT_MESSAGE_BYTES:
        return "message too large"
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return "not JSON"
    if not isinstance(message, dict) or set(message) != {"action", "markets"}:
        return 'expected {"action": ..., "markets": [...]}'
    action, markets = message["action"], message["markets"]
    if action not in ("subscribe", "unsubscribe"):
        return "action must be subscribe or unsubscribe"
    if not isinstance(markets, list) or not all(isinstance(m, str) for m in markets):
        return "markets must be a list of market ids"
    if not all(valid_market_id(m) for m in markets):
        return "a market id must be 1-64 printable ASCII characters without . * > or spaces"
    return action, markets


async def stream_odds(websocket: WebSocket, hub: OddsHub) -> None:
    watcher = Watcher()

    async def read_commands() -> None:
        while True:
            parsed = parse_client_message(await websocket.receive_text())
            if isinstance(parsed, str):
                await websocket.send_json(
                    {"type": "error", "code": p.VALIDATION_FAILED, "detail": parsed}
                )
                continue
            action, markets = parsed
            if action == "subscribe":
                if len(watcher.markets | set(markets)) > MAX_MARKETS_PER_CONNECTION:
                    await websocket.send_json(
                        {
                            "type": "error",
                            "code": p.VALIDATION_FAILED,
                            "detail": f"at most {MAX_MARKETS_PER_CONNECTION} markets",
                        }
                    )
                    continue
                for market_id in markets:
                    await hub.watch(watcher, market_id)
            else:
                for market_id in markets:
                    await hub.unwatch(watcher, market_id)
            await websocket.send_json({"type": "subscribed", "markets": sorted(watcher.markets)})

    async def push_odds() -> None:
        while True:
            await watcher.ready.wait()
            for message in watcher.take():
                await websocket.send_json(message)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read_commands())
            group.create_task(push_odds())
    except* (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await hub.unwatch_all(watcher)
