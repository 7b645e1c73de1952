"""A big settlement survives its leader: a real 3-node JetStream cluster and 3
replica processes; 20,000 bets on one market, settled in slices of 100 bets;
the leader is killed (kill -9) while the market is settling. The new leader
must finish the result from the last logged slice: every bet resulted in
exactly one slice, every winner paid once, money conserved, every replica at
the same state hash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironbook import core
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.client import ClientConfig, LedgerClient, connect_ledger
from ironbook.core import acting
from ironbook.core.events import MarketResulted
from ironbook.replication.batch import ReplayState
from ironbook.replication.checker import check_history
from ironbook.replication.interfaces import LogEntry
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import LocalCluster, wait_for_leaders

BETS = 20_000
SLICE_BETS = 100
PLAYERS = 200
MARKET = "big-race"
RUNNERS = 10


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("IRONBOOK_REPLICA_RESULT_SLICE_BETS", str(SLICE_BETS))
    local = LocalCluster(tmp_path / "cluster")
    try:
        local.start()
        asyncio.run(local.wait_leaders(timeout_ms=90_000))
        yield local
    finally:
        local.stop()


def _bet(number: int) -> core.PlaceBet:
    runner = number % RUNNERS
    return core.PlaceBet(
        request_id=f"bet-{number}",
        account_id=f"p{number % PLAYERS}",
        stake_minor=10 + number % 90,
        legs=(core.BetLeg(market_id=MARKET, selection_id=f"s{runner}", odds=200 + 20 * runner),),
    )


async def _ok(client: LedgerClient, commands: list[core.AnyCommand]) -> None:
    outcomes = await client.submit_many(commands)
    refused = [o for o in outcomes if not isinstance(o, core.Accepted)]
    assert not refused, refused[:3]


async def _settle_through_a_kill(cluster: LocalCluster) -> str:
    client = await connect_ledger(
        cluster.ops,
        config=ClientConfig(
            request_timeout_ms=1_000, deadline_ms=60_000, backoff_initial_ms=20, backoff_max_ms=300
        ),
        issuer=acting("test"),
    )
    try:
        selections = tuple(
            core.SelectionSpec(selection_id=f"s{i}", name=f"R{i}", odds=200 + 20 * i)
            for i in range(RUNNERS)
        )
        await _ok(
            client,
            [
                core.CreateMarket(
                    request_id="c",
                    market_id=MARKET,
                    event_id="e",
                    name="Big Race",
                    selections=selections,
                )
            ],
        )
        players = [f"p{i}" for i in range(PLAYERS)]
        await _ok(client, [core.OpenAccount(request_id=f"o-{p}", account_id=p) for p in players])
        await _ok(
            client,
            [
                core.Deposit(
                    request_id=f"d-{p}", account_id=p, amount_minor=10**7, reason="test top-up"
                )
                for p in players
            ],
        )
        for start in range(0, BETS, 5_000):
            await _ok(client, [_bet(n) for n in range(start, start + 5_000)])
        await _ok(client, [core.CloseMarket(request_id="close", market_id=MARKET)])
        leader = (await wait_for_leaders(cluster.ops, 1, timeout_ms=30_000))[0].node_id
        settle = core.SettleMarket(
            request_id="settle", market_id=MARKET, winners=(core.Winner(selection_id="s3"),)
        )
        await _ok(client, [settle])
        # Kill the leader once the market is seen settling, part-way through.
        seen_settling = False
        for number in range(500):
            view = await client.submit(core.GetMarket(request_id=f"q{number}", market_id=MARKET))
            assert isinstance(view, core.Accepted)
            assert isinstance(view.result, core.MarketView)
            if view.result.status == "settling" and view.result.result_done_bets > 0:
                seen_settling = True
                break
            await asyncio.sleep(0.005)
        assert seen_settling, "the settlement finished before the kill: raise BETS"
        cluster.replicas[leader].kill()
        # The new leader finishes it.
        for number in range(600):
            view = await client.submit(core.GetMarket(request_id=f"r{number}", market_id=MARKET))
            assert isinstance(view, core.Accepted)
            assert isinstance(view.result, core.MarketView)
            if view.result.status == "settled":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the settlement did not finish after the failover")
        cluster.replicas[leader].start()
        return leader
    finally:
        await client.close()


def test_a_settlement_finishes_exactly_once_after_its_leader_is_killed(
    cluster: LocalCluster,
) -> None:
    killed = asyncio.run(_settle_through_a_kill(cluster))

    async def read_back() -> tuple[dict[str, str], list[LogEntry]]:
        nc = await cluster.ops.connect("test-verify")
        try:
            hashes = await converged_hashes(nc, 0, cluster.replica_ids(0), timeout_ms=90_000)
            entries = await read_whole_log(nc, 0)
        finally:
            await nc.close()
        return hashes, list(entries)

    hashes, entries = asyncio.run(read_back())
    assert len(set(hashes.values())) == 1, hashes
    ledger = core.LedgerConfig(result_slice_bets=SLICE_BETS)
    assert check_history([], entries, hashes, ledger_config=ledger).violations == []
    replay = ReplayState.empty(ledger, verifier=ledger_verifier(cluster.data_dir, 0))
    resulted: dict[str, int] = {}
    terms: set[str] = set()
    for entry in entries:
        for event in replay.apply(entry) or ():
            if isinstance(event, MarketResulted):
                terms.add(entry.batch_id.split(":")[0])
                for outcome in event.bets:
                    resulted[outcome.bet_id] = resulted.get(outcome.bet_id, 0) + 1
    state = replay.state
    # Slices were logged by the killed leader and by its successor.
    assert len(terms) >= 2, f"every slice came from one term ({terms}); killed {killed}"
    bet_ids = state.markets[MARKET].bet_ids
    assert len(bet_ids) == BETS
    assert all(resulted.get(bet_id) == 1 for bet_id in bet_ids)
    for bet_id in bet_ids:
        bet = state.bets[bet_id]
        leg = bet.legs[0]
        price = leg.odds  # exact: stake × (1 + numerator/denominator), rounded down
        won = bet.stake_minor * (price.numerator + price.denominator) // price.denominator
        expected = won if leg.selection_id == "s3" else 0
        assert (bet.status, bet.payout_minor) == ("won" if expected else "lost", expected)
    assert core.check_invariants(state) == []
    assert state.markets[MARKET].status == "settled"
    assert state.settlements == {}
