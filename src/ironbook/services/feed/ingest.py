"""The feed ingester: a producer's feed into every partition's ledger, then
out to subscribers as live odds.

    python -m ironbook.bootstrap feed-ingest --nats URL --partitions N --producer sim

On start it asks every partition where the producer stands (`GetFeedCursor`)
and resumes the feed from the smallest cursor. Then, round after round (at
most one per `BUSY_INTERVAL_MS` while the feed is busy), it
takes everything the feed has (bounded), conflates it per market, sends one
`FeedBatch` to every partition and waits for all of them to acknowledge
before the next round: the ledger keeps the cursor, so a crash anywhere
resumes exactly, with no gap and nothing applied twice. After the
acknowledgements it publishes each changed market's full prices as JSON on
`odds.<event_id>.<market_id>`.

Producer down: no `alive` from the producer for longer than the threshold
suspends all its markets (`SetProducerStatus(down=True)`). They reopen once
the ingester has caught up with the feed's tail and a fresh `alive` arrives.

One ingester per producer is active: it holds the lease `feed-ingest-<producer>`
(JetStream KV, 3 s TTL); others stand by and take over when it lapses. Safety
never rests on the lease: two ingesters at once would only do the work twice,
since the ledger ignores batches it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.feed.messages import MAX_MARKETS_PER_MESSAGE, AnyFeedMessage
from ironbook.adapters.feed.nats_stream import NatsFeedStream
from ironbook.adapters.feed.provider import FeedProvider, FeedUnavailable
from ironbook.adapters.nats.lease import NatsLease
from ironbook.client import GaveUp, LedgerClient
from ironbook.core.odds import Odds, PriceStyle, format_price
from ironbook.core.views import FeedCursorReply, MarketPage, MarketView
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import LeaseUnavailable
from ironbook.services.feed.conflate import Conflation
from ironbook.services.feed.pacing import BUSY_INTERVAL_MS, busy
from ironbook.services.process import all_of
from ironbook.services.service_metrics import FeedIngestMetrics, IngestCounts

log = logging.getLogger("ironbook.feed.ingest")

DEFAULT_DOWN_AFTER_MS = 3_000
MAX_ROUND_MESSAGES = 20_000
MAX_ROUND_MARKETS = 5_000
MAX_ROUND_BYTES = 256 * 1024
QUEUE_MESSAGES = 50_000
IDLE_WAIT_MS = 100
FLUSH_QUIET_MS = 1_000
"""A round with no market changes still moves the cursors, at most this often."""
RETRY_PAUSE_MS = 200
LEASE_TTL_MS = 3_000
LEASE_RENEW_MS = 1_000
LEASE_RETRY_MS = 500
STATS_INTERVAL_S = 10.0


def odds_subject(event_id: str, market_id: str) -> str:
    return f"odds.{event_id}.{market_id}"


@dataclass(slots=True)
class BookEntry:
    event_id: str
    status: str
    in_play: bool
    prices: dict[str, Odds]
    ts_ms: int = 0
    """Provider time of the newest message about the market."""
    display: PriceStyle = "decimal"
    """The market's notation: the odds messages show prices in it."""


class OddsBook:
    """Each live market's full current prices, for the odds messages."""

    def __init__(self) -> None:
        self.markets: dict[str, BookEntry] = {}
        self.producer_down = False
        """While the producer is down its open markets take no bets: the odds
        messages say "suspended", as the ledger's market views do."""

    def apply(self, conflation: Conflation) -> list[str]:
        """Fold the round in; the markets it changed that the book did not
        know (to be read from the ledger)."""
        unknown = []
        for change in conflation.changes.values():
            entry = self.markets.get(change.market_id)
            if entry is None and change.selections:
                entry = self.markets[change.market_id] = BookEntry(
                    event_id=change.event_id,
                    status="open",
                    in_play=bool(change.in_play),
                    prices={s.selection_id: s.odds for s in change.selections},
                )
            if entry is None:
                unknown.append(change.market_id)
                continue
            entry.prices.update(change.prices)
            entry.ts_ms = change.ts_ms
            if change.status is not None:
                entry.status = change.status
            if change.in_play is not None:
                entry.in_play = change.in_play
        return unknown

    def learn(self, view: MarketView) -> None:
        # A view shows an open market of a down producer as suspended.
        status = "open" if view.producer_down and view.status == "suspended" else view.status
        self.markets[view.market_id] = BookEntry(
            event_id=view.event_id,
            status=status,
            in_play=view.in_play,
            prices={s.selection_id: s.odds for s in view.selections},
            display=view.ladder.display,
        )

    def message(self, market_id: str, *, cursor: int, feed_ts_ms: int) -> bytes:
        entry = self.markets[market_id]
        status = "suspended" if self.producer_down and entry.status == "open" else entry.status
        return msgspec.json.encode(
            {
                "event_id": entry.event_id,
                "market_id": market_id,
                "status": status,
                "in_play": entry.in_play,
                "display": entry.display,
                "prices": {
                    s: format_price(odds, entry.display) for s, odds in entry.prices.items()
                },
                "cursor": cursor,
                "feed_ts_ms": feed_ts_ms,
                "published_ms": time.time_ns() // 1_000_000,
            }
        )

    def forget_closed(self, market_ids: list[str]) -> None:
        for market_id in market_ids:
            entry = self.markets.get(market_id)
            if entry is not None and entry.status in ("closed", "settled", "voided"):
                del self.markets[market_id]


class Ingester:
    def __init__(
        self,
        provider: FeedProvider,
        client: LedgerClient,
        nc: NatsClient,
        *,
        down_after_ms: int = DEFAULT_DOWN_AFTER_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        counts: IngestCounts | None = None,
    ) -> None:
        """`counts`: the metrics, added to as the ingester works."""
        self._clock = clock
        """Seconds, monotonic: when heartbeats were read, rounds flushed."""
        self._sleep = sleep
        self._round_started: float | None = None
        self.provider = provider
        self.producer = provider.producer
        self.client = client
        self.nc = nc
        self.down_after_ms = down_after_ms
        self.book = OddsBook()
        self.cursor = 0
        """Every message up to here is acknowledged by every partition."""
        self.read_cursor = 0
        self.down = False
        self._last_alive = clock()
        self._caught_up_at: int | None = None
        """While down: a tail cursor the ingester has reached. An `alive` after
        it shows the producer is live again."""
        self._queue: asyncio.Queue[AnyFeedMessage] = asyncio.Queue(QUEUE_MESSAGES)
        self._last_flush = clock()
        self.rounds = 0
        self.messages = 0
        self.items = 0
        self.ledger_s = 0.0
        """Time spent waiting for the partitions' acknowledgements."""
        self.publish_s = 0.0
        self.counts = counts or IngestCounts()
        self.counts.silent_s = self.silent_s

    def silent_s(self) -> float:
        """Seconds since the producer's last `alive` was read."""
        return self._clock() - self._last_alive

    async def resume_cursor(self) -> int:
        """The smallest cursor over all partitions (and the producer's status)."""
        replies = await all_of(
            *(
                self._submit_until_done(
                    partition,
                    core.GetFeedCursor(
                        request_id=f"feed:{self.producer}:cursor:{time.time_ns()}",
                        producer=self.producer,
                    ),
                )
                for partition in range(self.client.partitions)
            )
        )
        cursors = []
        for outcome in replies:
            assert isinstance(outcome, core.Accepted)
            reply = outcome.result
            assert isinstance(reply, FeedCursorReply)
            cursors.append(reply.cursor)
            self.down = self.book.producer_down = self.down or reply.down
        return min(cursors)

    async def _submit_until_done(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome:
        """The ledger's definite outcome; the same request id is resent until
        there is one (a failover is latency here, never a gap)."""
        while True:
            try:
                return await self.client.submit_to(partition, command)
            except GaveUp as err:
                log.warning("partition %d: %s; retrying", partition, err)
                await asyncio.sleep(RETRY_PAUSE_MS / 1000)

    async def load_book(self) -> None:
        """The producer's live markets as the ledger holds them, so that odds
        messages (and producer-down suspensions) cover them all after a
        restart. Bounded: pages of `MAX_PAGE` markets."""
        after: str | None = None
        while True:
            query = core.ListMarkets(
                request_id=f"feed:{self.producer}:book:{time.time_ns()}", after=after, limit=200
            )
            outcome = await self._submit_until_done(0, query)
            page = outcome.result if isinstance(outcome, core.Accepted) else None
            if not isinstance(page, MarketPage):
                return
            for view in page.markets:
                if view.producer == self.producer and view.status not in ("settled", "voided"):
                    self.book.learn(view)
            if page.next_after is None:
                return
            after = page.next_after

    async def run(self, stop: asyncio.Event) -> None:
        self.cursor = self.read_cursor = await self.resume_cursor()
        await self.load_book()
        tail = await self.provider.tail_cursor()
        log.info(
            "producer %s: resuming after cursor %d (feed tail %d, producer %s)",
            self.producer,
            self.cursor,
            tail,
            "down" if self.down else "up",
        )
        if self.cursor > tail:
            log.error(
                "the ledger is ahead of the feed (%d > %d): was the feed reset?", self.cursor, tail
            )
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(self._read(self.cursor))
            try:
                stats_at = self._clock()
                while not stop.is_set():
                    await self.round()
                    if self._clock() - stats_at >= STATS_INTERVAL_S:
                        await self._log_stats(self._clock() - stats_at)
                        stats_at = self._clock()
            finally:
                reader.cancel()

    async def _read(self, after_cursor: int) -> None:
        async for message in self.provider.iterate(after_cursor):
            await self._queue.put(message)

    async def _take(self) -> Conflation:
        conflation = Conflation()
        try:
            first = await wait_for(self._queue.get(), timeout=IDLE_WAIT_MS / 1000)
        except TimeoutError:
            return conflation
        conflation.add(first)
        queue = self._queue
        while (
            not queue.empty()
            and conflation.messages < MAX_ROUND_MESSAGES
            # One message touches at most MAX_MARKETS_PER_MESSAGE markets: the
            # batch never exceeds the ledger's FeedBatch bound.
            and conflation.items <= MAX_ROUND_MARKETS - MAX_MARKETS_PER_MESSAGE
            # and stays far below any server's max_payload (1 MB by default).
            and conflation.approx_bytes < MAX_ROUND_BYTES
        ):
            conflation.add(queue.get_nowait())
        return conflation

    async def round(self) -> None:
        """Take what the feed has, apply it to every partition, publish odds,
        and judge the producer's liveness; pace the next round while the
        feed is busy."""
        started = self._clock()
        conflation = await self._take()
        now = self._clock()
        if conflation.messages:
            self.read_cursor = self.counts.read_cursor = conflation.through_cursor
            self.counts.messages_in += conflation.messages
            if conflation.alive_cursors:
                self._last_alive = now
        # While the producer is down every round is applied at once: markets
        # reopen only when the ledger holds everything read.
        flush_due = self.down or (now - self._last_flush) * 1000 >= FLUSH_QUIET_MS
        if conflation.items or (conflation.messages and flush_due):
            await self._apply(conflation)
        await self._judge_producer(conflation, now)
        pause_s = self._pause_after(conflation, started)
        if pause_s > 0:
            await self._sleep(pause_s)

    def _pause_after(self, conflation: Conflation, started: float) -> float:
        """Seconds to wait before the next round: until `BUSY_INTERVAL_MS` after
        this one started if the feed was `busy` since the previous round
        started (`services/feed/pacing.py`), else 0."""
        previous, self._round_started = self._round_started, started
        if previous is None or started <= previous:
            return 0.0
        if not busy(conflation.messages, started - previous):
            return 0.0
        return max(0.0, started + BUSY_INTERVAL_MS / 1000 - self._clock())

    async def _apply(self, conflation: Conflation) -> None:
        batch = conflation.batch(self.producer)
        started = self._clock()
        outcomes = await all_of(
            *(
                self._submit_until_done(partition, batch)
                for partition in range(self.client.partitions)
            )
        )
        for partition, outcome in enumerate(outcomes):
            if isinstance(outcome, core.Rejected):
                raise SystemExit(f"partition {partition} refused feed batch: {outcome.message}")
        self.cursor = conflation.through_cursor
        self._last_flush = acked = self._clock()
        self.ledger_s += acked - started
        self.rounds += 1
        self.messages += conflation.messages
        self.items += conflation.items
        self.counts.rounds += 1
        self.counts.market_changes += conflation.items
        self.counts.applied_cursor = self.cursor
        await self._publish_odds(conflation)
        self.publish_s += self._clock() - acked

    async def _publish_odds(self, conflation: Conflation) -> None:
        unknown = self.book.apply(conflation)
        if unknown:
            views = await all_of(*(self._market_view(m) for m in unknown))
            for view in views:
                if view is not None:
                    self.book.learn(view)
        for change in conflation.changes.values():
            if change.market_id not in self.book.markets:
                continue
            payload = self.book.message(
                change.market_id, cursor=change.seq, feed_ts_ms=change.ts_ms
            )
            with contextlib.suppress(Exception):
                await self.nc.publish(odds_subject(change.event_id, change.market_id), payload)
        self.book.forget_closed(list(conflation.changes))

    async def _market_view(self, market_id: str) -> MarketView | None:
        query = core.GetMarket(
            request_id=f"feed:{self.producer}:market:{market_id}", market_id=market_id
        )
        outcome = await self._submit_until_done(0, query)
        if isinstance(outcome, core.Accepted) and isinstance(outcome.result, MarketView):
            return outcome.result
        return None

    async def _judge_producer(self, conflation: Conflation, read_at: float) -> None:
        # Silence is measured up to when this round's messages were taken, not
        # up to now: the time the ingester itself spent applying the round
        # (seconds, on a loaded machine) is not the producer's silence, and
        # whatever the producer sent meanwhile is in the next round.
        silent_ms = (read_at - self._last_alive) * 1000
        if not self.down:
            if silent_ms > self.down_after_ms:
                log.warning(
                    "producer %s: no alive for %.0f ms: suspending its markets",
                    self.producer,
                    silent_ms,
                )
                await self._set_down(True)
            return
        if self._caught_up_at is not None and any(
            cursor > self._caught_up_at for cursor in conflation.alive_cursors
        ):
            log.info(
                "producer %s: alive again and the feed is caught up (cursor %d): reopening",
                self.producer,
                self.cursor,
            )
            await self._set_down(False)
            return
        if self._caught_up_at is None and self._queue.empty():
            with contextlib.suppress(FeedUnavailable):
                tail = await self.provider.tail_cursor()
                if self.cursor >= tail:
                    self._caught_up_at = tail

    async def _set_down(self, down: bool) -> None:
        command = core.SetProducerStatus(
            request_id=f"feed:{self.producer}:{'down' if down else 'up'}:{time.time_ns()}",
            producer=self.producer,
            down=down,
            reason=f"feed {self.producer} {'down' if down else 'up'}",
        )
        await all_of(
            *(
                self._submit_until_done(partition, command)
                for partition in range(self.client.partitions)
            )
        )
        self.down = self.book.producer_down = self.counts.down = down
        self._caught_up_at = None
        for market_id, entry in self.book.markets.items():
            payload = self.book.message(market_id, cursor=self.cursor, feed_ts_ms=entry.ts_ms)
            with contextlib.suppress(Exception):
                await self.nc.publish(odds_subject(entry.event_id, market_id), payload)

    async def _log_stats(self, elapsed_s: float) -> None:
        with contextlib.suppress(FeedUnavailable):
            tail = await self.provider.tail_cursor()
            log.info(
                "rounds %.1f/s (ledger %.0f ms, odds %.0f ms per round), messages %.0f/s, "
                "conflation %.1f messages per market change, cursor %d, lag %d messages, "
                "producer %s",
                self.rounds / elapsed_s,
                1000 * self.ledger_s / max(1, self.rounds),
                1000 * self.publish_s / max(1, self.rounds),
                self.messages / elapsed_s,
                self.messages / max(1, self.items),
                self.cursor,
                max(0, tail - self.read_cursor),
                "down" if self.down else "up",
            )
        self.rounds = self.messages = self.items = 0
        self.ledger_s = self.publish_s = 0.0


def lease_key(producer: str) -> str:
    return f"feed-ingest-{producer}"


async def serve(
    nc: NatsClient,
    client: LedgerClient,
    producer: str,
    *,
    replicas: int,
    down_after_ms: int,
    stop: asyncio.Event,
    metrics: FeedIngestMetrics | None = None,
) -> None:
    """Ingest while holding the producer's ingest lease; stand by otherwise.
    `metrics`, when given, are counted and told whether this ingester leads."""
    stream = await NatsFeedStream.open(nc, producer, replicas=replicas)
    lease = await NatsLease.open(nc, lease_key(producer), ttl_ms=LEASE_TTL_MS, replicas=replicas)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    while not stop.is_set():
        revision = await _acquire(lease, holder, stop)
        if revision is None:
            break
        log.info("producer %s: ingesting (lease revision %d)", producer, revision)
        counts = metrics.counts if metrics is not None else None
        ingester = Ingester(stream, client, nc, down_after_ms=down_after_ms, counts=counts)
        ingester.counts.leading = True
        try:
            await _ingest_while_leased(ingester, lease, holder, revision, stop)
        finally:
            ingester.counts.leading = False


async def _acquire(lease: NatsLease, holder: str, stop: asyncio.Event) -> int | None:
    """The lease's revision once held; None if stopped first."""
    waiting_logged = False
    while not stop.is_set():
        with contextlib.suppress(LeaseUnavailable):
            revision = await lease.acquire(holder)
            if revision is not None:
                return revision
        if not waiting_logged:
            log.info("another ingester holds lease %s: standing by", lease.key)
            waiting_logged = True
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), timeout=LEASE_RETRY_MS / 1000)
    return None


async def _ingest_while_leased(
    ingester: Ingester, lease: NatsLease, holder: str, revision: int, stop: asyncio.Event
) -> None:
    """Run the ingester, renewing the lease; stop it if the lease is lost.
    (Safety never rests on the lease: two ingesters at once only do the
    work twice, the ledger's cursor keeps the result exact.)"""
    expires_at = time.monotonic() + LEASE_TTL_MS / 1000
    held = True
    try:
        async with asyncio.TaskGroup() as group:
            run = group.create_task(ingester.run(stop))
            while not run.done():
                await asyncio.wait({run}, timeout=LEASE_RENEW_MS / 1000)
                if run.done():
                    break
                try:
                    renewed = await lease.renew(holder, revision)
                except LeaseUnavailable:
                    if time.monotonic() < expires_at:
                        continue
                    renewed = None
                if renewed is None:
                    log.warning("lease %s lost: standing by", lease.key)
                    held = False
                    break
                revision, expires_at = renewed, time.monotonic() + LEASE_TTL_MS / 1000
            run.cancel()
    finally:
        if held:
            with contextlib.suppress(LeaseUnavailable):
                await lease.release(holder, revision)
