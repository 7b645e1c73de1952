"""The settlement benchmark: settle one big market while the book goes on.

In one run, on this machine, against a fresh local cluster (3 nats-server
nodes, R3, fsync on every write; 3 replicas of one partition) in a temp dir:

1. Load: `--bets` bets on one 40-runner market, sent through the real client
   library `--load-batch` (5,000) commands at a time, the client packing up
   to 1,000 per request.
2. Background: `--clients` closed-loop clients place single bets on another
   market for the whole measurement: `--before-s` seconds before the result,
   then through the settlement.
3. Settle: close the market, send `SettleMarket`, and poll the market until
   it shows `settled`. `settle_s` runs from the send to the first poll that
   sees it settled.
   With `--kill-leader`, the leader is killed (kill -9) at the first poll
   that sees the result half done: the new leader must finish it.
4. Check: read the whole log back and replay it: every bet on the market is
   resulted exactly once (in exactly one slice), every winner paid its
   payout, the ledger's invariants hold.

Leader changes are counted from the replicas' heartbeats: `leader_changes`
counts the leader terms begun from the settlement's start to the end of the
run, `leader_changes_whole_run` every change since the load began. The
longest event-loop block per kind of work comes from the same heartbeats.

    ironbook bench settle --bets 400000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.benchmarks.common import command_line, log, machine_info
from ironbook.benchmarks.ledger import connect_bench_client
from ironbook.benchmarks.stats import percentile_ms
from ironbook.client import LedgerClient
from ironbook.core.events import MarketResulted
from ironbook.replication.batch import ReplayState
from ironbook.services.heartbeat_watch import HeartbeatWatch
from ironbook.services.inspect import read_whole_log
from ironbook.services.local_cluster import LocalCluster

BIG_MARKET = "grand-national"
NEXT_MARKET = "next-race"
RUNNERS = 40
WINNER = "s7"
OPENING_BALANCE_MINOR = 10**9
STAKE_MIN_MINOR = 10
STAKE_MAX_MINOR = 100
"""Small stakes: 1M bets keep every selection under its liability limit."""


def _odds(runner: int) -> int:
    return 200 + 20 * runner


def _selections() -> tuple[core.SelectionSpec, ...]:
    return tuple(
        core.SelectionSpec(selection_id=f"s{i}", name=f"Runner {i}", odds=_odds(i))
        for i in range(RUNNERS)
    )


@dataclass
class Background:
    """Single bets on the next race: (submitted, completed) monotonic seconds."""

    completions: list[tuple[float, float]] = field(default_factory=list)
    gave_up: int = 0
    refused: int = 0


async def _expect_accepted(outcomes: list[core.Outcome], what: str) -> None:
    refused = [o for o in outcomes if not isinstance(o, core.Accepted)]
    if refused:
        raise RuntimeError(f"{len(refused)} {what} refused, first: {refused[0]}")


async def set_up_big_market(client: LedgerClient, accounts: list[str], tag: str) -> None:
    for market_id in (BIG_MARKET, NEXT_MARKET):
        await _expect_accepted(
            [
                await client.submit(
                    core.CreateMarket(
                        request_id=f"{tag}-create-{market_id}",
                        market_id=market_id,
                        event_id="aintree",
                        name=market_id,
                        selections=_selections(),
                    )
                )
            ],
            "markets",
        )
    for start in range(0, len(accounts), 5_000):
        chunk = accounts[start : start + 5_000]
        opened = [core.OpenAccount(request_id=f"{tag}-open-{a}", account_id=a) for a in chunk]
        await _expect_accepted(await client.submit_many(opened), "accounts")
        deposits = [
            core.Deposit(
                request_id=f"{tag}-dep-{a}",
                account_id=a,
                amount_minor=OPENING_BALANCE_MINOR,
                reason="benchmark top-up",
            )
            for a in chunk
        ]
        await _expect_accepted(await client.submit_many(deposits), "deposits")


def _bet(tag: str, number: int, account: str, market_id: str, rng: random.Random) -> core.PlaceBet:
    runner = rng.randrange(RUNNERS)
    return core.PlaceBet(
        request_id=f"{tag}-{market_id}-{number}",
        account_id=account,
        stake_minor=rng.randint(STAKE_MIN_MINOR, STAKE_MAX_MINOR),
        legs=(core.BetLeg(market_id=market_id, selection_id=f"s{runner}", odds=_odds(runner)),),
    )


async def load_bets(
    client: LedgerClient, accounts: list[str], bets: int, batch: int, tag: str
) -> float:
    """Place `bets` bets on the big market; returns the seconds it took."""
    rng = random.Random(1)
    started = time.monotonic()
    for start in range(0, bets, batch):
        commands = [
            _bet(tag, n, accounts[n % len(accounts)], BIG_MARKET, rng)
            for n in range(start, min(bets, start + batch))
        ]
        await _expect_accepted(await client.submit_many(commands), "bets on the big market")
        log(f"  ... {start + len(commands):,} bets loaded")
    return time.monotonic() - started


async def _background(
    client: LedgerClient,
    accounts: list[str],
    tally: Background,
    stop: asyncio.Event,
    clients: int,
    tag: str,
) -> None:
    counter = iter(range(10**12))

    async def one_client(index: int) -> None:
        rng = random.Random(1_000 + index)
        while not stop.is_set():
            command = _bet(
                tag, next(counter), accounts[rng.randrange(len(accounts))], NEXT_MARKET, rng
            )
            submitted = time.monotonic()
            try:
                outcome = await client.submit(command)
            except Exception:  # GaveUp: counted, and the run fails below
                tally.gave_up += 1
                continue
            if not isinstance(outcome, core.Accepted):
                tally.refused += 1
            tally.completions.append((submitted, time.monotonic()))

    async with asyncio.TaskGroup() as group:
        for index in range(clients):
            group.create_task(one_client(index))


async def _settle(
    client: LedgerClient, tag: str, poll_ms: int, kill: Callable[[int], None] | None
) -> tuple[float, float, int]:
    """Close and settle the big market; returns (sent, seen settled) monotonic
    seconds and how many polls saw it settling. `kill`, if given, is called
    once (with the bets done) when a poll sees the result half done."""
    closed = await client.submit(core.CloseMarket(request_id=f"{tag}-close", market_id=BIG_MARKET))
    await _expect_accepted([closed], "close")
    sent = time.monotonic()
    outcome = await client.submit(
        core.SettleMarket(
            request_id=f"{tag}-settle",
            market_id=BIG_MARKET,
            winners=(core.Winner(selection_id=WINNER),),
        )
    )
    await _expect_accepted([outcome], "settlement")
    settling_polls = 0
    number = 0
    while True:
        number += 1
        view = await client.submit(
            core.GetMarket(request_id=f"{tag}-poll-{number}", market_id=BIG_MARKET)
        )
        if not isinstance(view, core.Accepted) or not isinstance(view.result, core.MarketView):
            raise RuntimeError(f"market read failed: {view}")
        market = view.result
        if market.status == "settled":
            return sent, time.monotonic(), settling_polls
        if kill is not None and 2 * market.result_done_bets >= market.result_total_bets > 0:
            kill(market.result_done_bets)
            kill = None
        settling_polls += 1
        await asyncio.sleep(poll_ms / 1000)


def _rate(tally: Background, start: float, end: float) -> float:
    done = sum(1 for _, completed in tally.completions if start <= completed < end)
    return round(done / (end - start), 1) if end > start else 0.0


def _latencies_ms(tally: Background, start: float, end: float) -> list[float]:
    return [(c - s) * 1000 for s, c in tally.completions if start <= s < end]


async def _check_log(
    endpoint: NatsEndpoint, data_dir: Path, bets: int, settle_request_id: str
) -> dict[str, Any]:
    """Replay the whole log: every bet of the big market resulted in exactly
    one slice, every winner paid, the invariants holding at the end."""
    nc = await endpoint.connect("bench-settle-check")
    try:
        entries = await read_whole_log(nc, 0, timeout_ms=300_000)
    finally:
        await close_nats(nc)
    replay = ReplayState.empty(verifier=ledger_verifier(data_dir, 0))
    times_resulted: dict[str, int] = {}
    slices = 0
    slice_entries: set[int] = set()
    for entry in entries:
        events = replay.apply(entry)
        for event in events or ():
            if isinstance(event, MarketResulted) and event.request_id == settle_request_id:
                slices += 1
                slice_entries.add(entry.seq)
                for outcome in event.bets:
                    times_resulted[outcome.bet_id] = times_resulted.get(outcome.bet_id, 0) + 1
    state = replay.state
    market = state.markets[BIG_MARKET]
    winners_paid_once = 0
    problems: list[str] = []
    for bet_id in market.bet_ids:
        bet = state.bets[bet_id]
        if times_resulted.get(bet_id) != 1:
            problems.append(f"{bet_id} resulted {times_resulted.get(bet_id, 0)} times")
        leg = bet.legs[0]
        price = leg.odds
        expected_payout = (
            bet.stake_minor * (price.numerator + price.denominator) // price.denominator
            if leg.selection_id == WINNER
            else 0
        )
        if bet.payout_minor != expected_payout:
            problems.append(f"{bet_id} paid {bet.payout_minor}, not {expected_payout}")
        elif expected_payout:
            winners_paid_once += 1
    problems.extend(core.check_invariants(state))
    if len(market.bet_ids) != bets:
        problems.append(f"the market has {len(market.bet_ids)} bets, not {bets}")
    return {
        "log_entries": len(entries),
        "void_entries": replay.voided,
        "slices": slices,
        "slice_entries": len(slice_entries),
        "winners_paid_once": winners_paid_once,
        "exactly_once": not problems,
        "problems": problems[:10],
    }


async def _measure(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    client = await connect_bench_client(cluster, 1_000)
    heartbeats = HeartbeatWatch(cluster.ops)
    tag = f"s{os.getpid()}"
    accounts = [f"punter-{i}" for i in range(args.accounts)]
    try:
        await heartbeats.start()
        log(f"setting up {args.accounts:,} accounts ...")
        await set_up_big_market(client, accounts, tag)
        log(f"loading {args.bets:,} bets on {BIG_MARKET} ...")
        load_s = await load_bets(client, accounts, args.bets, args.load_batch, tag)
        tally = Background()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_background(client, accounts, tally, stop, args.clients, tag))
            before_start = time.monotonic()
            await asyncio.sleep(args.before_s)
            log("settling ...")
            killed: dict[str, object] = {}
            kill = None
            if args.kill_leader:
                leader = (await cluster.wait_leaders())[0].node_id

                def kill(done_bets: int) -> None:
                    cluster.replicas[leader].kill()
                    killed.update(node=leader, at_bets_done=done_bets)
                    log(f"killed leader {leader} (kill -9)")

            sent, settled, settling_polls = await _settle(client, tag, args.poll_ms, kill)
            await asyncio.sleep(args.after_s)
            stop.set()
        settle_s = settled - sent
        during_ms = _latencies_ms(tally, sent, settled)
        before_ms = _latencies_ms(tally, before_start, sent)
        load_terms = heartbeats.leader_terms(0)
        # A term begun during the settlement (or the second after it).
        settle_terms = heartbeats.leader_terms(0, since=sent)
        check = await _check_log(cluster.ops, cluster.data_dir, args.bets, f"{tag}-settle")
    finally:
        await heartbeats.stop()
        await client.close()
    return {
        "bets": args.bets,
        "load_s": round(load_s, 3),
        "load_bets_per_s": round(args.bets / load_s, 1),
        "settle_s": round(settle_s, 3),
        "settled_bets_per_s": round(args.bets / settle_s, 1),
        "settling_polls": settling_polls,
        "bets_per_s_before": _rate(tally, before_start, sent),
        "bets_per_s_during_settle": _rate(tally, sent, settled),
        "p50_ms_before": percentile_ms(before_ms, 0.50),
        "p99_ms_before": percentile_ms(before_ms, 0.99),
        "p50_ms": percentile_ms(during_ms, 0.50),
        "p99_ms": percentile_ms(during_ms, 0.99),
        "max_ms": round(max(during_ms), 3) if during_ms else None,
        "background_bets_during_settle": len(during_ms),
        "background_gave_up": tally.gave_up,
        "background_refused": tally.refused,
        "killed_leader": killed or None,
        "leader_terms": {str(term): node for term, node in load_terms.items()},
        "leader_changes": len(settle_terms),
        "leader_changes_whole_run": max(0, len(load_terms) - 1),
        "loop_block_ms": heartbeats.longest_block_ms(),
        "loop_block_ms_by_node": heartbeats.block_ms_by_node(),
        "replicas": {node: list(role) for node, role in heartbeats.roles().items()},
        "check": check,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-settle-") as tmp:
        data_dir = Path(args.keep_dir) if args.keep_dir else Path(tmp) / "cluster"
        cluster = LocalCluster(data_dir, partitions=1)
        try:
            cluster.start()
            result = eventloop.run(_measure(cluster, args))
        finally:
            cluster.stop()
    return {
        "benchmark": "settle",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "slice_bets": core.LedgerConfig().result_slice_bets,
        "background_clients": args.clients,
        **result,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench settle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bets", type=int, default=100_000, help="bets on the big market")
    p.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    p.add_argument("--load-batch", type=int, default=5_000, help="bets sent at once when loading")
    p.add_argument("--clients", type=int, default=20, help="background bettors (default 20)")
    p.add_argument("--before-s", type=float, default=5.0, help="background before the result")
    p.add_argument("--after-s", type=float, default=1.0, help="background after it settled")
    p.add_argument("--poll-ms", type=int, default=20, help="market poll interval (default 20)")
    p.add_argument(
        "--kill-leader",
        action="store_true",
        help="kill -9 the leader when the result is half done (it must still finish once)",
    )
    p.add_argument(
        "--keep-dir", help="run the cluster in this new directory and keep its data and logs"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.keep_dir and Path(args.keep_dir).exists():
        p.error(f"--keep-dir {args.keep_dir} exists: give a new directory")
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    ok = (
        result["check"]["exactly_once"]
        and result["background_gave_up"] == 0
        and result["background_refused"] == 0
    )
    return 0 if ok else 1
