"""The feed on a real cluster (3 NATS nodes, 2 partitions × 3 replicas, the
ingester and the settlement service as supervised processes). The test plays
an external provider: it publishes into the feed stream itself, so it knows
exactly what the ledger must end up holding.

One cluster for the module; the tests run in order and build on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from feed_support import MarketState, Partition
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook import core
from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    BetCancel,
    BetSettlement,
    MarketSelection,
    NewMarket,
    OddsChange,
    Result,
    RollbackBetSettlement,
)
from ironbook.adapters.feed.nats_stream import (
    FeedPublishRefused,
    NatsFeedStream,
    feed_stream_name,
)
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig
from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.provision import close_nats
from ironbook.cli.feed import feed_status
from ironbook.client import LedgerClient, ledger_over_nats
from ironbook.core import acting
from ironbook.core.odds import format_decimal, from_hundredths, payout_minor
from ironbook.core.views import AccountView, FeedCursorReply, MarketPage, MarketView
from ironbook.replication.checker import check_history
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.feed.settlement import CONSUMER
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import LocalCluster

pytestmark = pytest.mark.slow

PRODUCER = "ext"
DOWN_AFTER_MS = 1_500
ALIVE_EVERY_S = 0.3
CHUNK = 500
WAIT_S = 60.0
START_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        Path(tmp_path_factory.mktemp("feed")) / "cluster",
        partitions=2,
        feed=FeedOptions(source="external", producer=PRODUCER, down_after_ms=DOWN_AFTER_MS),
    )
    try:
        local.start(timeout_ms=START_TIMEOUT_MS)
        asyncio.run(local.wait_leaders(timeout_ms=START_TIMEOUT_MS))
        yield local
    finally:
        local.stop()


class Provider:
    """Publishes into the feed stream like an external provider, with its
    own heartbeat."""

    def __init__(self, stream: NatsFeedStream, cursor: int) -> None:
        self.stream = stream
        self.cursor = cursor
        self._lock = asyncio.Lock()
        self._alive: asyncio.Task[None] | None = None

    async def send(self, messages: Sequence[AnyFeedMessage], *, pause_s: float = 0.0) -> int:
        """In chunks, so the heartbeat goes on during a burst; a chunk that
        is not acknowledged is sent again (the stream de-duplicates it).
        `pause_s` between chunks spreads a burst over time. The cursor of the
        last message sent."""
        last_cursor = 0
        for start in range(0, len(messages), CHUNK):
            if start and pause_s:
                await asyncio.sleep(pause_s)
            async with self._lock:
                stamped = []
                for message in messages[start : start + CHUNK]:
                    self.cursor += 1
                    stamped.append(
                        msgspec.structs.replace(
                            message,
                            producer=PRODUCER,
                            cursor=self.cursor,
                            ts_ms=time.time_ns() // 1_000_000,
                        )
                    )
                for attempt in range(1, 6):
                    try:
                        await self.stream.publish(stamped)
                        break
                    except FeedPublishRefused:
                        if attempt == 5:
                            raise
                last_cursor = self.cursor
        return last_cursor

    def start_alive(self) -> None:
        async def beat() -> None:
            while True:
                await self.send([Alive(producer=PRODUCER, cursor=1, ts_ms=0)])
                await asyncio.sleep(ALIVE_EVERY_S)

        self._alive = asyncio.create_task(beat())

    async def stop_alive(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._alive
            self._alive = None


@contextlib.asynccontextmanager
async def connected(
    cluster: LocalCluster,
) -> AsyncIterator[tuple[LedgerClient, Provider, NatsClient]]:
    nc = await cluster.ops.connect("test")
    client = ledger_over_nats(nc, partitions=cluster.partitions, issuer=acting("test"))
    stream = await NatsFeedStream.open(nc, PRODUCER)
    provider = Provider(stream, await stream.tail_cursor())
    provider.start_alive()
    try:
        yield client, provider, nc
    finally:
        await provider.stop_alive()
        await client.close()
        await close_nats(nc)


class OddsWatcher:
    """The newest `odds.<event>.<market>` message of every market (by cursor)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    async def watch(self, nc: NatsClient) -> None:
        async def on_message(msg: Msg) -> None:
            data = json.loads(msg.data)
            known = self.latest.get(data["market_id"])
            if known is None or known["cursor"] <= data["cursor"]:
                self.latest[data["market_id"]] = data

        await nc.subscribe("odds.>", cb=on_message)
        await nc.flush()

    def prices(self, market_id: str) -> dict[str, str] | None:
        message = self.latest.get(market_id)
        return None if message is None else dict(message["prices"])

    def status(self, market_id: str) -> str | None:
        message = self.latest.get(market_id)
        return None if message is None else str(message["status"])


def _rid(what: str) -> str:
    return f"test-{what}-{time.time_ns()}"


async def feed_cursors(client: LedgerClient) -> list[FeedCursorReply]:
    replies = []
    for partition in range(client.partitions):
        outcome = await client.submit_to(
            partition, core.GetFeedCursor(request_id=_rid("cursor"), producer=PRODUCER)
        )
        assert isinstance(outcome, core.Accepted) and isinstance(outcome.result, FeedCursorReply)
        replies.append(outcome.result)
    return replies


async def wait_until(what: str, check: object, timeout_s: float = WAIT_S) -> float:
    """Poll the async predicate `check` until true; seconds it took."""
    started = time.monotonic()
    while True:
        if await check():  # type: ignore[operator]
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


async def wait_caught_up(client: LedgerClient, provider: Provider) -> None:
    async def caught_up() -> bool:
        return all(r.cursor >= provider.cursor for r in await feed_cursors(client))

    await wait_until(f"every partition at cursor {provider.cursor}", caught_up)


async def wait_producer_up(client: LedgerClient) -> float:
    async def up() -> bool:
        return not any(r.down for r in await feed_cursors(client))

    return await wait_until("producer up", up)


async def partition_markets(client: LedgerClient, partition: int) -> tuple[MarketState, bool]:
    """A partition's markets, and whether any is marked with its producer down."""
    markets: MarketState = {}
    producer_down = False
    after = None
    while True:
        outcome = await client.submit_to(
            partition, core.ListMarkets(request_id=_rid("markets"), after=after, limit=200)
        )
        assert isinstance(outcome, core.Accepted) and isinstance(outcome.result, MarketPage)
        for view in outcome.result.markets:
            producer_down = producer_down or view.producer_down
            markets[view.market_id] = (
                view.status,
                view.in_play,
                view.bet_delay_s,
                {s.selection_id: s.odds for s in view.selections},
            )
        after = outcome.result.next_after
        if after is None:
            return markets, producer_down


async def whole_feed(provider: Provider) -> list[AnyFeedMessage]:
    messages: list[AnyFeedMessage] = []
    cursor = 0
    while cursor < provider.cursor:
        chunk, cursor = await provider.stream.read(cursor, max_messages=5_000, wait_ms=1_000)
        messages.extend(chunk)
    return messages


def test_ingester_killed_mid_burst_resumes_exactly(cluster: LocalCluster) -> None:
    """SIGKILL the active ingester while a burst of 10,000 messages is going
    in; a standby takes the lease over and resumes from the smallest partition
    cursor, and every partition ends equal to a message-by-message fold of the
    feed, and the newest odds message of every market shows its folded prices."""
    ingester = cluster.feeds["feed-ingest"]
    standby = ManagedProcess(
        "feed-ingest-standby",
        ingester.argv,
        log_path=cluster.data_dir / "logs" / "feed-ingest-standby.log",
        env=cluster.child_env,
    )

    async def scenario() -> None:
        async with connected(cluster) as (client, provider, nc):
            odds = OddsWatcher()
            await odds.watch(nc)
            simulator = Simulator(
                SimulatorConfig(
                    producer=PRODUCER, seed=11, odds_changes_per_s=5_000, pre_match_s=900
                ),
                epoch_ms=time.time_ns() // 1_000_000,
            )
            await provider.send([simulator.next() for _ in range(200)])
            await wait_caught_up(client, provider)
            start_cursor = provider.cursor
            burst = [simulator.next() for _ in range(10_000)]
            # 20 chunks over ~4 s: the ingester is killed while the burst is
            # still going in, however fast the machine (frames make the
            # publishing itself take milliseconds).
            sending = asyncio.create_task(provider.send(burst, pause_s=0.2))

            async def ingesting() -> bool:
                return min(r.cursor for r in await feed_cursors(client)) > start_cursor + 1_000

            standby.start()
            await wait_until("the burst going in", ingesting)
            ingester.kill()
            killed_at = min(r.cursor for r in await feed_cursors(client))
            burst_end = await sending
            assert killed_at < burst_end, "the burst was all in before the kill"
            await wait_caught_up(client, provider)
            ingester.start()
            await wait_producer_up(client)
            fold = Partition(PRODUCER)
            fold.feed(await whole_feed(provider))
            expected = fold.markets()
            assert len(expected) >= 5

            async def as_fed() -> bool:
                for partition in range(client.partitions):
                    markets, producer_down = await partition_markets(client, partition)
                    if producer_down or markets != expected:
                        return False
                return True

            # On a loaded machine the new ingester can miss the producer's
            # alive past the threshold just after its start and suspend the
            # markets until the next one: every partition converges to the
            # feed's own state, with the producer up.
            await wait_until("every partition's markets as fed, producer up", as_fed)

            async def odds_match() -> bool:
                return all(
                    odds.prices(market_id) == {s: format_decimal(o) for s, o in prices.items()}
                    for market_id, (_, _, _, prices) in expected.items()
                )

            await wait_until("the newest odds of every market published", odds_match, 10.0)
            assert "ingesting" in standby.log_path.read_text()
            message = odds.latest[next(iter(expected))]
            assert set(message) == {
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

    try:
        asyncio.run(scenario())
    finally:
        standby.stop()


def test_producer_down_suspends_its_markets_then_reopens(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with connected(cluster) as (client, provider, nc):
            odds = OddsWatcher()
            await odds.watch(nc)
            await wait_producer_up(client)
            account = _rid("acct")[:60]
            await client.submit(core.OpenAccount(request_id=_rid("open"), account_id=account))
            await client.submit(
                core.Deposit(
                    request_id=_rid("dep"),
                    account_id=account,
                    amount_minor=100_000,
                    reason="test top-up",
                )
            )
            page = await client.submit(core.ListMarkets(request_id=_rid("m"), status="open"))
            assert isinstance(page, core.Accepted) and isinstance(page.result, MarketPage)
            market = next(m for m in page.result.markets if not m.in_play)
            selection = market.selections[0]

            async def bet() -> core.Outcome:
                return await client.submit(
                    core.PlaceBet(
                        request_id=_rid("bet"),
                        account_id=account,
                        stake_minor=100,
                        legs=(core.BetLeg(market.market_id, selection.selection_id, 101),),
                        price_change="any",
                    )
                )

            assert isinstance(await bet(), core.Accepted)
            await provider.stop_alive()

            async def refused() -> bool:
                outcome = await bet()
                return isinstance(outcome, core.Rejected) and outcome.code == "market_suspended"

            took_s = await wait_until("bets refused with the producer down", refused, 20.0)
            print(f"producer down: bets refused {took_s:.2f} s after the last alive")
            assert all(r.down for r in await feed_cursors(client))

            async def odds_suspended() -> bool:
                return odds.status(market.market_id) == "suspended"

            await wait_until("odds subscribers told the market is suspended", odds_suspended, 10.0)
            provider.start_alive()

            async def accepted() -> bool:
                return isinstance(await bet(), core.Accepted)

            took_s = await wait_until("bets accepted again", accepted, 30.0)
            print(f"producer back: bets accepted {took_s:.2f} s after the first alive")
            assert not any(r.down for r in await feed_cursors(client))

            async def odds_open() -> bool:
                return odds.status(market.market_id) == "open"

            await wait_until("odds subscribers told the market is open", odds_open, 10.0)

    asyncio.run(scenario())


def test_settlement_killed_mid_market_pays_each_result_once(cluster: LocalCluster) -> None:
    """Results (a settlement, a rollback and resettlement, a cancel) go in
    while the settlement service is killed twice; each is paid exactly once;
    the whole log replays with conservation holding at every position."""
    settler = cluster.feeds["feed-settle"]

    async def scenario() -> None:
        async with connected(cluster) as (client, provider, nc):
            await wait_producer_up(client)
            tag = str(time.time_ns())[-9:]
            ids = {name: f"{name}{tag}" for name in ("A", "B", "C")}

            def created(market: str, selections: Sequence[str]) -> NewMarket:
                return NewMarket(
                    producer=PRODUCER,
                    cursor=1,
                    ts_ms=0,
                    event_id=f"ev{tag}",
                    event_name="Test v Test",
                    sport="football",
                    market_id=ids[market],
                    market_name=market,
                    selections=tuple(MarketSelection(s, s, 250) for s in selections),
                )

            await provider.send(
                [
                    created("A", ("x", "y", "z")),
                    created("B", ("b1", "b2")),
                    created("C", ("c1", "c2")),
                ]
            )
            await wait_caught_up(client, provider)
            accounts = {name: f"acct-{name}-{tag}" for name in ("a1", "a2", "a3")}
            for account in accounts.values():
                await client.submit(core.OpenAccount(request_id=_rid("o"), account_id=account))
                await client.submit(
                    core.Deposit(
                        request_id=_rid("d"),
                        account_id=account,
                        amount_minor=10_000,
                        reason="test top-up",
                    )
                )
            bets = [
                ("a1", "A", "x", 1_000),
                ("a2", "A", "y", 1_000),
                ("a1", "B", "b1", 500),
                ("a3", "B", "b2", 700),
                ("a2", "C", "c1", 300),
            ]
            for account, market, selection, stake in bets:
                outcome = await client.submit(
                    core.PlaceBet(
                        request_id=_rid("b"),
                        account_id=accounts[account],
                        stake_minor=stake,
                        legs=(core.BetLeg(ids[market], selection, 250),),
                    )
                )
                assert isinstance(outcome, core.Accepted), outcome
            settler.kill()
            ev = f"ev{tag}"
            results_cursor = await provider.send(
                [
                    *(
                        OddsChange(
                            producer=PRODUCER,
                            cursor=1,
                            ts_ms=0,
                            event_id=ev,
                            market_id=ids[m],
                            status="closed",
                        )
                        for m in "ABC"
                    ),
                    BetSettlement(
                        producer=PRODUCER,
                        cursor=1,
                        ts_ms=0,
                        event_id=ev,
                        market_id=ids["A"],
                        winners=(Result("x"),),
                    ),
                    BetSettlement(
                        producer=PRODUCER,
                        cursor=1,
                        ts_ms=0,
                        event_id=ev,
                        market_id=ids["B"],
                        winners=(Result("b1"),),
                    ),
                    BetCancel(
                        producer=PRODUCER,
                        cursor=1,
                        ts_ms=0,
                        event_id=ev,
                        market_id=ids["C"],
                        reason="abandoned",
                    ),
                    RollbackBetSettlement(
                        producer=PRODUCER, cursor=1, ts_ms=0, event_id=ev, market_id=ids["A"]
                    ),
                    BetSettlement(
                        producer=PRODUCER,
                        cursor=1,
                        ts_ms=0,
                        event_id=ev,
                        market_id=ids["A"],
                        winners=(Result("y"),),
                    ),
                ]
            )
            for pause_s in (0.8, 0.5):
                settler.start()
                await asyncio.sleep(pause_s)
                settler.kill()
            settler.start()
            js = nc.jetstream()

            async def all_settled() -> bool:
                info = await js.consumer_info(feed_stream_name(PRODUCER), CONSUMER)
                return bool(info.num_pending == 0 and info.num_ack_pending == 0)

            await wait_until("every result settled", all_settled)
            feed = await feed_status(cluster.ops, cluster.partitions, PRODUCER)
            assert feed["settlement"]["pending"] == feed["settlement"]["in_flight"] == 0
            assert all(row["cursor"] >= results_cursor for row in feed["partitions"])
            paid = payout_minor(1_000, [from_hundredths(250)])
            expected = {
                "a1": 10_000 - 1_000 - 500 + payout_minor(500, [from_hundredths(250)]),
                "a2": 10_000 - 1_000 + paid - 300 + 300,
                "a3": 10_000 - 700,
            }
            for name, account in accounts.items():
                outcome = await client.submit(
                    core.GetAccount(request_id=_rid("g"), account_id=account)
                )
                assert isinstance(outcome, core.Accepted)
                assert isinstance(outcome.result, AccountView)
                assert outcome.result.balance_minor == expected[name], name
            for market, status in (("A", "settled"), ("B", "settled"), ("C", "voided")):
                for partition in range(client.partitions):
                    outcome = await client.submit_to(
                        partition, core.GetMarket(request_id=_rid("gm"), market_id=ids[market])
                    )
                    assert isinstance(outcome, core.Accepted)
                    assert isinstance(outcome.result, MarketView)
                    assert outcome.result.status == status

        checker_nc = await cluster.ops.connect("test")
        try:
            for partition in range(cluster.partitions):
                replicas = cluster.replica_ids(partition)
                hashes = await converged_hashes(checker_nc, partition, replicas)
                entries = await read_whole_log(checker_nc, partition)
                config = core.LedgerConfig(partition=partition)
                report = check_history([], entries, hashes, ledger_config=config)
                assert report.violations == []
        finally:
            await close_nats(checker_nc)

    asyncio.run(scenario())
