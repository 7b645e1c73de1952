"""The odds benchmark: live prices from the feed to 1,000 WebSocket subscribers,
and ledger bet throughput while the feed runs.

In one run, on this machine, against a fresh local cluster (3 nats-server
nodes, R3, fsync always; 3 replicas; 2 gateway workers) in a temp dir:

1. Latency: `--subscribers` WebSocket clients, spread over `--client-processes`
   processes, each watch `--markets-per-subscriber` random markets of those the
   feed moves, while the feed runs at `--latency-rate` changes/s for
   `--latency-seconds` (after `--warmup-seconds`). Latency of a frame = the
   subscriber's wall clock when it arrives - the message's `feed_ts_ms` (when
   the feed produced the change): end to end, through the ledger, NATS, the
   gateway and the socket (`feed_ts_ms` is whole ms: a sample reads up to 1 ms
   high). `fanout_*_ms` measure from `published_ms`: the part after the ledger.
2. Throughput: closed-loop virtual bettors place bets through the real client
   library (as the ledger benchmark does) for `--seconds`, with the feed off, at
   1,000 and at 5,000 price changes/s. The subscribers are disconnected for
   these phases unless `--subscribers-during-throughput` is given (they run on
   the same cores and would be charged to the ledger).

The feed, per phase:
  --feed sim        (default; "simulator" in the output) the real feed
                    processes of `services/feed` - simulator, ingester,
                    settlement - with a fresh producer at the phase's rate. The
                    simulator runs a meeting of ~11 markets; subscribers watch
                    1 each and the latency phase runs at 50 changes/s.
  --feed synthetic  this benchmark's own feed process over `--markets` markets:
                    random walks on the ladder, conflated per 10 ms tick,
                    written to the ledger (`UpdatePrices`), then published with
                    the feed's message shape. Subscribers watch 5 markets each;
                    the latency phase runs at 1,000 changes/s.

CPU seconds of NATS, replicas, gateways, history projectors, feed and
subscriber processes are reported per phase: on a shared machine CPU per
operation is the fair comparison; wall-clock numbers need a quiet machine.

    ironbook bench odds [--json] [--quick]

This module runs the phases; `odds_feeds` and `odds_subscribers` are the
helper processes, `cpu` the meter, `stats` the statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.nats.localproc import PortLease
from ironbook.benchmarks.children import READY_TIMEOUT_S
from ironbook.benchmarks.common import command_line, log, machine_info, wait_http_ready
from ironbook.benchmarks.cpu import CpuMeter, cluster_groups
from ironbook.benchmarks.ledger import (
    connect_bench_client,
    drive,
    set_up,
    wait_for_recorded_deposits,
)
from ironbook.benchmarks.odds_feeds import FeedRun, create_market_commands, start_feed
from ironbook.benchmarks.odds_subscribers import Subscribers
from ironbook.benchmarks.stats import median_or_none, percentile_ms, round_ratios
from ironbook.client import LedgerClient
from ironbook.services.gateway.auth import local_signing_key, mint_token
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

THROUGHPUT_RATES = (0, 1_000, 5_000)
"""Feed changes/s of the throughput phases, in the order they run."""
GATEWAY_LIMITS = {
    # One address opens every subscriber: the per-address limits of the edge
    # are for the internet, not for this benchmark.
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "1000000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_IP_BURST": "1000000",
    "IRONBOOK_GATEWAY_WS_MAX_PER_IP": "1000000",
    "IRONBOOK_GATEWAY_WS_MAX_PER_PRINCIPAL": "1000000",
    "IRONBOOK_GATEWAY_LIMIT_CONCURRENCY": "1000000",
}


def _meter(cluster: LocalCluster, feed: FeedRun | None, subscribers: Subscribers) -> CpuMeter:
    return CpuMeter(
        {
            **cluster_groups(cluster),
            "feed": [] if feed is None else feed.pids,
            "subscribers": subscribers.pids,
        }
    )


def _stop(meter: CpuMeter) -> dict[str, float]:
    cpu = meter.stop()
    cpu["cluster_and_feed_cpu_s"] = round(cpu["cluster_cpu_s"] + cpu["feed_cpu_s"], 2)
    return cpu


async def _connect_subscribers(
    cluster: LocalCluster, args: argparse.Namespace, market_ids: list[str]
) -> Subscribers:
    assert cluster.http_url is not None
    secret = local_signing_key(cluster.data_dir)
    token = mint_token(secret, role="auditor", sub="odds-bench")
    ws_url = cluster.http_url.replace("http://", "ws://") + "/v1/odds/stream"
    log(f"connecting {args.subscribers} subscribers to {len(market_ids)} markets ...")
    return await Subscribers.start(args, ws_url, token, market_ids)


async def _latency_phase(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.warmup_seconds + args.latency_seconds
    feed = await start_feed(cluster, args, args.latency_rate, seconds, phase=1)
    subscribers = Subscribers()
    try:
        subscribers = await _connect_subscribers(cluster, args, feed.market_ids)
        log(
            f"latency: {args.warmup_seconds} s warm-up, then {args.latency_seconds} s "
            f"at {args.latency_rate} changes/s ..."
        )
        await feed.go()
        await asyncio.sleep(args.warmup_seconds)
        await subscribers.tell(b"reset")
        meter = _meter(cluster, feed, subscribers)
        meter.start()
        await asyncio.sleep(args.latency_seconds)
        cpu = _stop(meter)
        stats = await feed.finish()
        results = await subscribers.stop()
    finally:
        subscribers.kill()
        feed.stop()
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    fanout = sorted(x for r in results for x in r["fanout_ms"])
    frames = len(latencies)
    return {
        "odds_p50_ms": percentile_ms(latencies, 0.50),
        "odds_p90_ms": percentile_ms(latencies, 0.90),
        "odds_p99_ms": percentile_ms(latencies, 0.99),
        "odds_p999_ms": percentile_ms(latencies, 0.999),
        "odds_max_ms": round(latencies[-1], 2) if latencies else None,
        "fanout_p50_ms": percentile_ms(fanout, 0.50),
        "fanout_p99_ms": percentile_ms(fanout, 0.99),
        "frames_received": frames,
        "markets_watched": len(feed.market_ids),
        "feed": stats,
        "subscriber_errors": [e for r in results for e in r["errors"]][:5],
        "subscribers_lost": sum(r["lost"] for r in results),
        "subscribers_lost_examples": [e for r in results for e in r["lost_examples"]][:3],
        "cpu": cpu,
        "gateway_cpu_us_per_frame": (
            round(cpu["gateways_cpu_s"] * 1e6 / frames, 1) if frames else None
        ),
    }


async def _throughput_phase(
    cluster: LocalCluster,
    client: LedgerClient,
    accounts: list[str],
    rate_per_s: int,
    args: argparse.Namespace,
    round_index: int,
) -> dict[str, Any]:
    log(f"throughput: {args.concurrency} clients for {args.seconds} s, feed {rate_per_s}/s")
    # Every phase has its own request ids and its own feed producer: a request
    # id seen before is answered from the ledger's memory of its first outcome
    # (no new bet), and a producer seen before resumes its old world.
    tag = f"{args.run_tag}-r{round_index}-{rate_per_s}"
    phase = 2 + round_index * len(THROUGHPUT_RATES) + THROUGHPUT_RATES.index(rate_per_s)
    feed = (
        await start_feed(cluster, args, rate_per_s, args.seconds, phase=phase)
        if rate_per_s
        else None
    )
    subscribers = Subscribers()
    try:
        if feed is not None and args.subscribers_during_throughput:
            subscribers = await _connect_subscribers(cluster, args, feed.market_ids)
        meter = _meter(cluster, feed, subscribers)
        if feed is not None:
            await feed.go()
        meter.start()
        tally, elapsed_s = await drive(
            client,
            accounts,
            concurrency=args.concurrency,
            seconds=args.seconds,
            seed=args.seed,
            run_tag=tag,
        )
        cpu = _stop(meter)
        stats = None if feed is None else await feed.finish()
    finally:
        subscribers.kill()
        if feed is not None:
            feed.stop()
    placed = tally.accepted + tally.rejected
    result: dict[str, Any] = {
        "feed_rate_per_s": rate_per_s,
        "bets_per_s": round(placed / elapsed_s, 1),
        "bets": placed,
        "rejected": tally.rejected,
        "gave_up": tally.gave_up,
        "bet_p50_ms": percentile_ms(tally.latencies_ms, 0.50),
        "bet_p99_ms": percentile_ms(tally.latencies_ms, 0.99),
        "cpu": cpu,
        "cluster_cpu_ms_per_bet": (
            round(cpu["cluster_cpu_s"] * 1000 / placed, 4) if placed else None
        ),
    }
    if stats is not None:
        result["feed"] = stats
    return result


async def _measure(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    assert cluster.http_url is not None
    await wait_http_ready(cluster.http_url, READY_TIMEOUT_S)
    client = await connect_bench_client(cluster, args.client_batch)
    try:
        accounts = [f"acct-{i}" for i in range(args.accounts)]
        log(f"setting up {args.accounts:,} accounts ...")
        await set_up(client, accounts, args.run_tag)
        await wait_for_recorded_deposits(cluster, len(accounts))
        if args.feed == "synthetic":
            markets = create_market_commands(
                args.markets, args.markets_per_event, args.seed, args.run_tag
            )
            for outcome in await client.submit_many(markets):
                if not isinstance(outcome, core.Accepted):
                    raise RuntimeError(f"odds market refused: {outcome}")
        latency = await _latency_phase(cluster, args)
        rounds: list[dict[int, dict[str, Any]]] = []
        for round_index in range(args.rounds):
            if args.rounds > 1:
                log(f"throughput round {round_index + 1} of {args.rounds}")
            # Every other round runs the phases in reverse, so that a drift
            # over the run (the state grows, the cluster warms up) does not
            # favour whichever phase always comes first.
            order = THROUGHPUT_RATES if round_index % 2 == 0 else THROUGHPUT_RATES[::-1]
            phases = {}
            for position, rate in enumerate(order):
                phases[rate] = await _throughput_phase(
                    cluster, client, accounts, rate, args, round_index
                )
                phases[rate]["position_in_round"] = position
            rounds.append({rate: phases[rate] for rate in THROUGHPUT_RATES})
    finally:
        await client.close()
    bets_per_s = {
        rate: statistics.median(r[rate]["bets_per_s"] for r in rounds) for rate in THROUGHPUT_RATES
    }
    ratios = {rate: round_ratios(rounds, rate) for rate in THROUGHPUT_RATES[1:]}
    return {
        "latency": latency,
        "throughput": [{str(rate): phase for rate, phase in r.items()} for r in rounds],
        "bets_per_s_no_feed": bets_per_s[0],
        "bets_per_s_feed_1000": bets_per_s[1_000],
        "bets_per_s_feed_5000": bets_per_s[5_000],
        "ratio_feed_1000": median_or_none(ratios[1_000]),
        "ratio_feed_5000": median_or_none(ratios[5_000]),
        "round_ratios_feed_1000": ratios[1_000],
        "round_ratios_feed_5000": ratios[5_000],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    ports = PortLease()
    (port,) = ports.take(1)
    try:
        with tempfile.TemporaryDirectory(prefix="ironbook-bench-odds-") as tmp:
            data_dir = Path(args.keep_dir) if args.keep_dir else Path(tmp) / "cluster"
            # Plaintext: each phase feeds the ledger through a producer of its
            # own, made up while the cluster runs, which no allow-list names.
            cluster = LocalCluster(
                data_dir,
                partitions=args.partitions,
                gateway=GatewayOptions(port=port, workers=args.gateway_workers, env=GATEWAY_LIMITS),
                secure=False,
            )
            try:
                cluster.start()
                measured = eventloop.run(_measure(cluster, args))
            finally:
                cluster.stop()
                if args.keep_dir:
                    log(f"the cluster's data and logs are in {data_dir}")
    finally:
        ports.release()
    latency = measured["latency"]
    return {
        "benchmark": "odds",
        "command": command_line(),
        "feed": "simulator" if args.feed == "sim" else "synthetic",
        "odds_p50_ms": latency["odds_p50_ms"],
        "odds_p99_ms": latency["odds_p99_ms"],
        "subscribers": args.subscribers,
        "bets_per_s_no_feed": measured["bets_per_s_no_feed"],
        "bets_per_s_feed_1000": measured["bets_per_s_feed_1000"],
        "bets_per_s_feed_5000": measured["bets_per_s_feed_5000"],
        "ratio_feed_1000": measured["ratio_feed_1000"],
        "ratio_feed_5000": measured["ratio_feed_5000"],
        "round_ratios_feed_1000": measured["round_ratios_feed_1000"],
        "round_ratios_feed_5000": measured["round_ratios_feed_5000"],
        "floor": {
            "odds_p99_ms_max": 100,
            "odds_p99_met": latency["odds_p99_ms"] is not None and latency["odds_p99_ms"] <= 100,
            "ratio_feed_1000_min": 0.8,
            "ratio_met": (measured["ratio_feed_1000"] or 0) >= 0.8,
        },
        "parameters": {
            "subscribers": args.subscribers,
            "client_processes": args.client_processes,
            "markets": args.markets,
            "markets_per_event": args.markets_per_event,
            "markets_per_subscriber": args.markets_per_subscriber,
            "latency_rate_per_s": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "throughput_seconds": args.seconds,
            "throughput_rounds": args.rounds,
            "concurrency": args.concurrency,
            "accounts": args.accounts,
            "partitions": args.partitions,
            "gateway_workers": args.gateway_workers,
            "subscribers_during_throughput": args.subscribers_during_throughput,
            "seed": args.seed,
        },
        "latency": latency,
        "throughput": measured["throughput"],
        "machine": machine_info(load_at_start),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench odds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--feed",
        choices=("sim", "synthetic"),
        default="sim",
        help="sim: the real feed (simulator -> ingester -> ledger -> odds); "
        "synthetic: this benchmark's own feed process over --markets markets (default sim)",
    )
    p.add_argument("--subscribers", type=int, default=1_000, help="WebSocket clients (1000)")
    p.add_argument("--client-processes", type=int, default=2, help="processes holding them (2)")
    p.add_argument("--markets", type=int, default=1_000, help="markets whose prices move (1000)")
    p.add_argument("--markets-per-event", type=int, default=10, help="(10)")
    p.add_argument(
        "--markets-per-subscriber",
        type=int,
        help="markets each client watches (sim: 1 of the ~11 moving; synthetic: 5 of --markets)",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        help="price changes/s while latency is measured (sim: 50; synthetic: 1000)",
    )
    p.add_argument("--latency-seconds", type=float, default=20.0, help="(20)")
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="(3)")
    p.add_argument("--seconds", type=float, default=10.0, help="each throughput phase (10)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=(
            "run the three throughput phases this many times, every other round in "
            "reverse order; bets/s are the medians over rounds, ratios the medians of "
            "each round's own ratio (6; 1 with --quick)"
        ),
    )
    p.add_argument("--concurrency", type=int, default=2_000, help="virtual bettors (2000)")
    p.add_argument("--accounts", type=int, default=10_000, help="(10000)")
    p.add_argument("--client-batch", type=int, default=1_000, help="max commands per request")
    p.add_argument("--partitions", type=int, default=1, help="ledger partitions (1)")
    p.add_argument("--gateway-workers", type=int, default=2, help="(2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--subscribers-during-throughput",
        action="store_true",
        help="keep the subscribers connected while bets are measured",
    )
    p.add_argument(
        "--keep-dir",
        metavar="DIR",
        help="run the cluster in DIR (a new directory) and keep its data and logs afterwards",
    )
    p.add_argument("--quick", action="store_true", help="a short run (~1 min) to check it works")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument(
        "--run-tag",
        default=f"o{os.getpid()}",
        help="prefix of every request id (a fresh one per run)",
    )
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse parameters the run cannot use, before a cluster is started."""
    at_least_one = (
        "subscribers",
        "client_processes",
        "markets",
        "markets_per_event",
        "concurrency",
        "accounts",
        "client_batch",
        "partitions",
        "gateway_workers",
        "rounds",
    )
    for name in at_least_one:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.markets_per_subscriber < 1 or args.markets_per_subscriber > 100:
        p.error("--markets-per-subscriber must be 1..100 (the gateway's limit per connection)")
    if args.latency_rate <= 0 or args.latency_seconds <= 0 or args.seconds <= 0:
        p.error("--latency-rate, --latency-seconds and --seconds must be positive")
    if args.warmup_seconds < 0:
        p.error("--warmup-seconds cannot be negative")
    if args.keep_dir and Path(args.keep_dir).exists():
        p.error(f"--keep-dir {args.keep_dir} exists: give a new directory")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    sim = args.feed == "sim"
    if args.markets_per_subscriber is None:
        args.markets_per_subscriber = 1 if sim else 5
    if args.latency_rate is None:
        args.latency_rate = 50 if sim else 1_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 6
    _check(p, args)
    if args.quick:
        args.latency_seconds = min(args.latency_seconds, 5.0)
        args.warmup_seconds = min(args.warmup_seconds, 1.0)
        args.seconds = min(args.seconds, 4.0)
        args.accounts = min(args.accounts, 2_000)
        args.concurrency = min(args.concurrency, 500)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(json.dumps(result, indent=2))
    print(
        f"\nodds feed -> {result['subscribers']} subscribers: p50 {result['odds_p50_ms']} ms, "
        f"p99 {result['odds_p99_ms']} ms; bets/s {result['bets_per_s_no_feed']:,.0f} no feed, "
        f"{result['bets_per_s_feed_1000']:,.0f} at 1000/s ({result['ratio_feed_1000']}), "
        f"{result['bets_per_s_feed_5000']:,.0f} at 5000/s ({result['ratio_feed_5000']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
