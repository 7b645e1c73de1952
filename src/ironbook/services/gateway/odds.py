"""`GET /v1/odds/stream`: live odds over WebSocket, bridged from NATS.

The feed (issue 6) publishes each changed market's full current prices, as a
JSON object, on `odds.<event>.<market>`. A worker holds one NATS subscription
per market (`odds.*.<market>`) or event (`odds.<event>.*`) that at least one
of its clients watches, checks each message once, builds the text frame once,
and offers that same frame to every watcher.

Odds are state, not a log: a client that reads slower than prices change gets
the *latest* price of each market (conflation), never an unbounded queue. A
watcher holds at most one pending frame per market it watches, and its sender
waits for the socket to drain before the next frame, so a client that stops
reading costs a bounded amount of memory. A connection may watch at most
`MAX_MARKETS_PER_CONNECTION` markets and `MAX_EVENTS_PER_CONNECTION` events.

The same subjects land in the JetStream stream `ODDS` (memory, one message per
subject, replicated, direct get allowed), provisioned idempotently by every
worker at startup: the newest prices of every market can be read by any
worker, also after a restart, to answer a snapshot.

Protocol (JSON text frames):
    client: {"action": "subscribe" | "unsubscribe" | "snapshot",
             "markets": ["m1", ...], "events": ["e1", ...]}   (either or both lists)
    server: {"type": "subscribed", "markets": [...], "events": [...]}
            {"type": "odds", "market": "m1", "subject": "odds.e1.m1", "data": {...}}
            {"type": "snapshot", "odds": [{"type": "odds", ...}, ...]}
            {"type": "error", "code": "validation_failed" | "rate_limited" | "unavailable",
             "detail": "..."}

`data` is the feed's message as published. A client that subscribes and then
asks for a snapshot may receive a live frame before the snapshot: per market,
it keeps the frame with the higher `data.cursor`. See docs/odds.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import msgspec
import nats.errors
from fastapi import WebSocket, WebSocketDisconnect
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from prometheus_client import Counter, Gauge

from ironbook.adapters.nats.provision import ensure_stream
from ironbook.replication.concurrency import wait_for
from ironbook.services.gateway import problems as p
from ironbook.services.gateway.traffic import TokenBuckets

log = logging.getLogger("ironbook.gateway.odds")

MAX_MARKETS_PER_CONNECTION = 100
MAX_EVENTS_PER_CONNECTION = 20
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
"""Also uvicorn's `ws_max_size`: a larger frame closes the socket (1009)."""
WS_POLICY_VIOLATION = 1008
COMMANDS_PER_S = 10
COMMANDS_BURST = 50
"""Client requests per connection: each may (un)subscribe on NATS or read the
store, so a client cannot churn them in a loop."""
MAX_ODDS_MESSAGE_BYTES = 64 * 1024
"""A feed message larger than this is dropped (and logged), not fanned out."""
MAX_SNAPSHOT_MARKETS = 1_000
SNAPSHOT_TIMEOUT_S = 2.0
SUBSCRIPTION_PENDING_BYTES = 16 * 1024 * 1024
"""nats-py's buffer per subscription while the worker is busy (default 128 MB).
Past it nats-py drops messages (a slow-consumer error): the market shows its
previous price until its next change."""
FRAME_CACHE_SUBJECTS = 20_000
"""Frames remembered by subject, so that a message arriving twice (through a
market and an event subscription) is checked and encoded once."""

ODDS_STREAM = "ODDS"
ODDS_SUBJECTS = "odds.>"
ODDS_MAX_AGE_S = 24 * 3600
ODDS_MAX_BYTES = 256 * 1024 * 1024
UNAVAILABLE = "unavailable"

_FORBIDDEN_SUBJECT_CHARS = frozenset(".*> \t\r\n")

# Frame counts are written at most once per METRICS_FLUSH_S per connection
# (with PROMETHEUS_MULTIPROC_DIR every write goes to a shared file).
METRICS_FLUSH_S = 1.0
SUBSCRIBERS = Gauge(
    "ironbook_odds_subscribers",
    "Open odds WebSocket connections",
    multiprocess_mode="livesum",
)
FRAMES_SENT = Counter("ironbook_odds_frames_sent_total", "Odds frames written to WebSockets")
FRAMES_CONFLATED = Counter(
    "ironbook_odds_frames_conflated_total",
    "Odds frames replaced by a newer price before a slow client took them",
)
SNAPSHOTS = Counter("ironbook_odds_snapshots_total", "Odds snapshots by result", ["result"])
_EOB_STATUSES = frozenset({"204", "404"})


def odds_stream_config(replicas: int) -> StreamConfig:
    """The last price of every market: memory storage (prices are rebuilt by
    the feed after a full cluster restart), one message per subject."""
    return StreamConfig(
        name=ODDS_STREAM,
        description="newest odds per market (odds.<event>.<market>), for snapshots",
        subjects=[ODDS_SUBJECTS],
        storage=StorageType.MEMORY,
        num_replicas=replicas,
        max_msgs_per_subject=1,
        max_age=ODDS_MAX_AGE_S,
        max_bytes=ODDS_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )


async def ensure_odds_stream(nc: NatsClient, *, replicas: int) -> None:
    """Create the `ODDS` stream if it does not exist (idempotent)."""
    await ensure_stream(nc.jetstream(), odds_stream_config(replicas))


def market_subject(market_id: str) -> str:
    return f"odds.*.{market_id}"


def event_subject(event_id: str) -> str:
    return f"odds.{event_id}.*"


def valid_id(identifier: str) -> bool:
    """A market or event id that is one token of a NATS subject."""
    return (
        0 < len(identifier) <= 64
        and identifier.isascii()
        and identifier.isprintable()
        and not _FORBIDDEN_SUBJECT_CHARS.intersection(identifier)
    )


def _split_subject(subject: str) -> tuple[str, str] | None:
    """(event, market) of `odds.<event>.<market>`."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != "odds":
        return None
    return parts[1], parts[2]


def odds_frame(subject: str, market_id: str, data: bytes) -> str | None:
    """The text frame for one feed message, or None if it is not a JSON object.

    The feed's bytes are embedded as they are (checked, not re-encoded)."""
    if len(data) > MAX_ODDS_MESSAGE_BYTES:
        return None
    try:
        decoded = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        return None
    if not isinstance(decoded, dict):
        return None
    return (
        '{"type":"odds","market":'
        + json.dumps(market_id)
        + ',"subject":'
        + json.dumps(subject)
        + ',"data":'
        + data.decode()
        + "}"
    )


class Watcher:
    """One connection's view: the newest undelivered frame per market.

    Keyed by subject (`odds.<event>.<market>`): a market watched directly and
    through its event is one entry, delivered once."""

    def __init__(self) -> None:
        self.latest: dict[str, str] = {}
        self.offered: dict[str, str] = {}
        """The last frame offered per subject, to skip the same frame arriving
        through a second subscription."""
        self.ready = asyncio.Event()
        self.markets: set[str] = set()
        self.events: set[str] = set()
        self.conflated = 0
        self.sent = 0

    def offer(self, subject: str, frame: str) -> None:
        if self.offered.get(subject) == frame:
            return
        self.offered[subject] = frame
        if subject in self.latest:
            self.conflated += 1
        self.latest[subject] = frame
        self.ready.set()

    def take(self) -> list[str]:
        frames = list(self.latest.values())
        self.latest.clear()
        self.ready.clear()
        return frames

    def forget_unwatched(self) -> None:
        """Drop pending frames of markets no longer watched."""
        for subject in list(self.offered):
            parts = _split_subject(subject)
            if parts is None or (parts[0] not in self.events and parts[1] not in self.markets):
                self.offered.pop(subject, None)
                self.latest.pop(subject, None)
        if not self.latest:
            self.ready.clear()


_Key = tuple[str, str]
"""("market" | "event", id)."""


class Odds(Protocol):
    """What a WebSocket connection needs from its worker's odds (`OddsHub`)."""

    async def watch(self, watcher: Watcher, kind: str, identifier: str) -> None: ...

    async def unwatch(self, watcher: Watcher, kind: str, identifier: str) -> None: ...

    async def unwatch_all(self, watcher: Watcher) -> None: ...

    async def snapshot(self, markets: Iterable[str], events: Iterable[str]) -> list[str]: ...


class OddsHub:
    """Per worker: NATS subscriptions shared by every watcher of a market or event."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._watchers: dict[_Key, set[Watcher]] = {}
        self._subscriptions: dict[_Key, Subscription] = {}
        self._frames: dict[str, tuple[bytes, str]] = {}
        self._changing = asyncio.Lock()
        """Held while a NATS subscription is made or dropped: two clients
        watching a new market at once must not both subscribe."""
        self.messages = 0
        self.dropped = 0

    @classmethod
    async def open(cls, nc: NatsClient, *, replicas: int) -> OddsHub:
        """The hub, after making sure the `ODDS` stream exists."""
        await ensure_odds_stream(nc, replicas=replicas)
        return cls(nc)

    async def watch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        key = (kind, identifier)
        self._watchers.setdefault(key, set()).add(watcher)
        (watcher.markets if kind == "market" else watcher.events).add(identifier)
        async with self._changing:
            if key in self._subscriptions or key not in self._watchers:
                return
            subject = market_subject(identifier) if kind == "market" else event_subject(identifier)
            self._subscriptions[key] = await self._nc.subscribe(
                subject, cb=self._deliver_to(key), pending_bytes_limit=SUBSCRIPTION_PENDING_BYTES
            )
            # The server has registered the subscription once a flush returns:
            # "subscribed" must mean that the next price published arrives.
            with contextlib.suppress(nats.errors.Error):
                await self._nc.flush(timeout=2)

    async def unwatch(self, watcher: Watcher, kind: str, identifier: str) -> None:
        key = (kind, identifier)
        (watcher.markets if kind == "market" else watcher.events).discard(identifier)
        watcher.forget_unwatched()
        watchers = self._watchers.get(key)
        if watchers is None:
            return
        watchers.discard(watcher)
        if watchers:
            return
        del self._watchers[key]
        async with self._changing:
            if key in self._watchers:  # watched again meanwhile
                return
            subscription = self._subscriptions.pop(key, None)
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def unwatch_all(self, watcher: Watcher) -> None:
        for market_id in list(watcher.markets):
            await self.unwatch(watcher, "market", market_id)
        for event_id in list(watcher.events):
            await self.unwatch(watcher, "event", event_id)

    def frame(self, subject: str, data: bytes) -> str | None:
        """The frame for a message, built once per distinct message."""
        cached = self._frames.get(subject)
        if cached is not None and cached[0] == data:
            return cached[1]
        parts = _split_subject(subject)
        built = None if parts is None else odds_frame(subject, parts[1], data)
        if built is None:
            self.dropped += 1
            log.warning("dropped an odds message on %s: not a JSON object", subject)
            return None
        if len(self._frames) >= FRAME_CACHE_SUBJECTS:
            self._frames.clear()
        self._frames[subject] = (data, built)
        return built

    def _deliver_to(self, key: _Key) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            self.messages += 1
            watchers = self._watchers.get(key)
            if not watchers:
                return
            frame = self.frame(msg.subject, msg.data)
            if frame is None:
                return
            for watcher in watchers:
                watcher.offer(msg.subject, frame)

        return deliver

    async def snapshot(self, markets: Iterable[str], events: Iterable[str]) -> list[str]:
        """The newest frame of each market asked for, directly or by event,
        read from the `ODDS` stream (any replica answers)."""
        filters = [market_subject(m) for m in markets] + [event_subject(e) for e in events]
        if not filters:
            return []
        frames: list[str] = []
        finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None:
                if not finished.done():
                    finished.set_result(status)
                return
            subject = headers.get("Nats-Subject", "")
            frame = self.frame(subject, msg.data)
            if frame is not None:
                frames.append(frame)

        inbox = self._nc.new_inbox()
        subscription = await self._nc.subscribe(inbox, cb=on_reply)
        try:
            request = {"multi_last": filters, "batch": MAX_SNAPSHOT_MARKETS}
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{ODDS_STREAM}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            status = await wait_for(finished, SNAPSHOT_TIMEOUT_S)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        if status not in _EOB_STATUSES:
            raise OddsSnapshotUnavailable(f"the odds store answered {status}")
        return frames


class OddsSnapshotUnavailable(Exception):
    """The `ODDS` stream could not answer a snapshot."""


class SubscribeFailed(Exception):
    """NATS refused a subscription; the request was undone."""


class ClientRequest(msgspec.Struct, forbid_unknown_fields=True):
    action: str
    markets: list[str] = []
    events: list[str] = []


_ACTIONS = ("subscribe", "unsubscribe", "snapshot")


def parse_client_message(text: str) -> ClientRequest | str:
    """The request, or an error detail."""
    if len(text) > MAX_CLIENT_MESSAGE_BYTES:
        return "message too large"
    try:
        request = msgspec.json.decode(text, type=ClientRequest)
    except msgspec.ValidationError as err:
        return f'expected {{"action": ..., "markets": [...], "events": [...]}}: {err}'
    except msgspec.DecodeError:
        return "not JSON"
    if request.action not in _ACTIONS:
        return "action must be subscribe, unsubscribe or snapshot"
    if not request.markets and not request.events:
        return "give a non-empty list of markets or events"
    if not all(valid_id(i) for i in (*request.markets, *request.events)):
        return (
            "a market or event id must be 1-64 printable ASCII characters without . * > or spaces"
        )
    return request


class MetricsCursor:
    """What of a watcher's counts is already in Prometheus. Counting per frame
    cost a tenth of a worker's fan-out CPU (each write goes to a shared file),
    so counts are written at most once per `METRICS_FLUSH_S`."""

    def __init__(self) -> None:
        self.sent = 0
        self.conflated = 0
        self.flushed_at = time.monotonic()

    def maybe_flush(self, watcher: Watcher) -> None:
        if time.monotonic() - self.flushed_at >= METRICS_FLUSH_S:
            self.flush(watcher)

    def flush(self, watcher: Watcher) -> None:
        if watcher.sent != self.sent:
            FRAMES_SENT.inc(watcher.sent - self.sent)
            self.sent = watcher.sent
        if watcher.conflated != self.conflated:
            FRAMES_CONFLATED.inc(watcher.conflated - self.conflated)
            self.conflated = watcher.conflated
        self.flushed_at = time.monotonic()


def _error(code: str, detail: str) -> str:
    return json.dumps({"type": "error", "code": code, "detail": detail})


class SessionEnded(Exception):
    """The socket was closed by the gateway: its token expired or was revoked."""


async def stream_odds(  # noqa: C901 — one session: a receive loop dispatching each client action
    websocket: WebSocket, hub: Odds, until_invalid: Callable[[], Awaitable[str]]
) -> None:
    """Serve one accepted socket until the client leaves or `until_invalid()`
    returns (the reason the token no longer holds: the socket is closed
    with 1008 and that reason)."""
    watcher = Watcher()
    # Replies and odds share the socket; one sender at a time keeps frames whole
    # and lets a reply wait for the drain like any frame.
    send_lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with send_lock:
            await websocket.send_text(text)

    async def subscribe(request: ClientRequest) -> str | None:
        markets = watcher.markets | set(request.markets)
        events = watcher.events | set(request.events)
        if len(markets) > MAX_MARKETS_PER_CONNECTION:
            return f"at most {MAX_MARKETS_PER_CONNECTION} markets"
        if len(events) > MAX_EVENTS_PER_CONNECTION:
            return f"at most {MAX_EVENTS_PER_CONNECTION} events"
        new_markets = set(request.markets) - watcher.markets
        new_events = set(request.events) - watcher.events
        try:
            for market_id in request.markets:
                await hub.watch(watcher, "market", market_id)
            for event_id in request.events:
                await hub.watch(watcher, "event", event_id)
        except (nats.errors.Error, OSError) as err:
            # NATS is away (the client reconnects by itself): undo this request.
            log.warning("odds subscribe failed: %r", err)
            with contextlib.suppress(nats.errors.Error, OSError):
                for market_id in new_markets:
                    await hub.unwatch(watcher, "market", market_id)
                for event_id in new_events:
                    await hub.unwatch(watcher, "event", event_id)
            raise SubscribeFailed from err
        return None

    async def read_commands() -> None:
        bucket = TokenBuckets(COMMANDS_PER_S, COMMANDS_BURST, max_keys=1)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if bucket.take("commands") > 0:
                await send(
                    _error(p.RATE_LIMITED, f"at most {COMMANDS_PER_S} requests/s per connection")
                )
                continue
            if not isinstance(text, str):
                await send(_error(p.VALIDATION_FAILED, "send JSON in text frames, not binary"))
                continue
            request = parse_client_message(text)
            if isinstance(request, str):
                await send(_error(p.VALIDATION_FAILED, request))
                continue
            if request.action == "snapshot":
                if len(request.markets) > MAX_MARKETS_PER_CONNECTION or (
                    len(request.events) > MAX_EVENTS_PER_CONNECTION
                ):
                    await send(
                        _error(
                            p.VALIDATION_FAILED,
                            f"a snapshot names at most {MAX_MARKETS_PER_CONNECTION} markets "
                            f"and {MAX_EVENTS_PER_CONNECTION} events",
                        )
                    )
                    continue
                try:
                    frames = await hub.snapshot(request.markets, request.events)
                except (OddsSnapshotUnavailable, TimeoutError, nats.errors.Error) as err:
                    log.warning("odds snapshot failed: %r", err)
                    SNAPSHOTS.labels(result="unavailable").inc()
                    await send(_error(UNAVAILABLE, "the odds store did not answer; retry"))
                    continue
                SNAPSHOTS.labels(result="ok").inc()
                await send('{"type":"snapshot","odds":[' + ",".join(frames) + "]}")
                continue
            # Holding the sender: the reply goes out before any price of a
            # market this request starts watching.
            async with send_lock:
                if request.action == "subscribe":
                    try:
                        refused = await subscribe(request)
                    except SubscribeFailed:
                        await websocket.send_text(
                            _error(UNAVAILABLE, "live odds are unavailable for a moment; retry")
                        )
                        continue
                    if refused is not None:
                        await websocket.send_text(_error(p.VALIDATION_FAILED, refused))
                        continue
                else:
                    for market_id in request.markets:
                        await hub.unwatch(watcher, "market", market_id)
                    for event_id in request.events:
                        await hub.unwatch(watcher, "event", event_id)
                reply = {
                    "type": "subscribed",
                    "markets": sorted(watcher.markets),
                    "events": sorted(watcher.events),
                }
                await websocket.send_text(json.dumps(reply))

    async def push_odds() -> None:
        counted = MetricsCursor()
        try:
            while True:
                await watcher.ready.wait()
                frames = watcher.take()
                for frame in frames:
                    await send(frame)
                watcher.sent += len(frames)
                counted.maybe_flush(watcher)
        finally:
            counted.flush(watcher)

    async def end_when_invalid() -> None:
        reason = await until_invalid()
        async with send_lock:
            await websocket.close(code=WS_POLICY_VIOLATION, reason=reason)
        raise SessionEnded(reason)

    SUBSCRIBERS.inc()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read_commands())
            group.create_task(push_odds())
            group.create_task(end_when_invalid())
    except* (WebSocketDisconnect, RuntimeError, SessionEnded):
        pass
    finally:
        SUBSCRIBERS.dec()
        await hub.unwatch_all(watcher)
