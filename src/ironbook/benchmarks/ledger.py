"""The ledger benchmark: committed bets/s through a real cluster, against PostgreSQL.

In one run, on this machine:
1. ironbook: a fresh local cluster (3 nats-server nodes, R3, fsync on every
   write; 3 replicas per partition) in a temp dir. Closed-loop virtual clients
   place bets through the real client library for `--seconds`; every bet's
   latency is measured from submit to durable outcome. The clock starts once
   the event recorder has recorded the set-up's deposits (`audit_catch_up_s`:
   how long that took after the set-up).
2. Failover: under a lighter load, kill -9 the leader replica and measure the
   time from the kill to the first accepted bet that was submitted after it.
3. PostgreSQL 15, primary + synchronous standby: the same bets (same accounts,
   stakes, concurrency) one transaction per bet, and batched through a
   plpgsql function (`--pg-batch-size` bets per call).
   `cpu` gives the CPU seconds each group of processes used over the
   measured phase (NATS, replicas, the audit verifier and event recorder,
   this load generator), `cpu_ms_per_bet` the same per bet: figures that
   hold on a busy machine, where bets/s do not.
4. With `--monitoring`: the load of 1 again on a fresh cluster that runs the
   monitoring stack (Prometheus scraping every process each second,
   Alertmanager, node_exporter, the NATS collector, the alert receiver);
   `monitoring_ratio` is its bets/s over 1's.
The cluster is secured as `ironbook up` secures it (mutual TLS, one identity
per service, encryption at rest); `--security both` first measures the same
load on a plaintext cluster and reports `security_ratio` (secured / plaintext).
Leaders sign audit checkpoints (docs/audit.md); `--audit both` first measures
the same load with checkpoints off (no Merkle tree, no signing) and reports
`audit_ratio` (checkpoints on / off).

    python bench/ledger.py [--json]      or      ironbook bench ledger [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ironbook import core
from ironbook.adapters import eventloop
from ironbook.adapters.audit.events import EVENTS_STREAM, event_subject
from ironbook.adapters.nats.provision import close_nats
from ironbook.benchmarks.common import command_line, machine_info
from ironbook.benchmarks.cpu import CLUSTER_GROUPS, CpuMeter, cluster_groups
from ironbook.benchmarks.postgres import run_baseline
from ironbook.benchmarks.stats import percentile_ms
from ironbook.client import BatchConfig, ClientConfig, LedgerClient, connect_ledger
from ironbook.services.local_cluster import LocalCluster, wait_for_leaders
from ironbook.settings import MonitoringSettings

OPENING_BALANCE_MINOR = 1_000_000_00
STAKE_MIN_MINOR = 100
STAKE_MAX_MINOR = 5_000
SELECTIONS = 20
MARKETS = 50
"""Enough selections (1,000) that the per-selection liability limit never
refuses a bet: every bet placed is accepted, as in the PostgreSQL baseline."""


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    completions: list[tuple[float, float, bool]] = field(default_factory=list)
    """(submitted_at, completed_at, accepted) in `time.monotonic()` seconds."""
    accepted: int = 0
    rejected: int = 0
    gave_up: int = 0


def _selections() -> tuple[core.SelectionSpec, ...]:
    return tuple(
        core.SelectionSpec(selection_id=f"s{i}", name=f"Runner {i}", odds=200 + 20 * i)
        for i in range(SELECTIONS)
    )


def _market_id(index: int) -> str:
    return f"bench-market-{index}"


async def set_up(client: LedgerClient, accounts: list[str], run_tag: str) -> None:
    for index in range(MARKETS):
        outcome = await client.submit(
            core.CreateMarket(
                request_id=f"{run_tag}-market-{index}",
                market_id=_market_id(index),
                event_id="bench",
                name=f"Benchmark Stakes {index}",
                selections=_selections(),
            )
        )
        if not isinstance(outcome, core.Accepted):
            raise RuntimeError(f"market refused: {outcome}")
    for start in range(0, len(accounts), 2_000):
        chunk = accounts[start : start + 2_000]
        await client.submit_many(
            [core.OpenAccount(request_id=f"{run_tag}-open-{a}", account_id=a) for a in chunk]
        )
        await client.submit_many(
            [
                core.Deposit(
                    request_id=f"{run_tag}-dep-{a}",
                    account_id=a,
                    amount_minor=OPENING_BALANCE_MINOR,
                    reason="benchmark top-up",
                )
                for a in chunk
            ]
        )


AUDIT_CATCH_UP_TIMEOUT_S = 120.0


async def wait_for_recorded_deposits(cluster: LocalCluster, deposits: int) -> float:
    """Wait until the event recorder has recorded `deposits` deposits (the
    set-up's, each a significant event); returns the seconds waited. The
    measured load then starts on a cluster that has caught up, however fast
    this machine recorded them."""
    subject = event_subject("deposit")
    started = time.monotonic()
    nc = await cluster.ops.connect("ironbook-bench-audit")
    try:
        js = nc.jetstream()
        while True:
            info = await js.stream_info(EVENTS_STREAM, subjects_filter=subject)
            if (info.state.subjects or {}).get(subject, 0) >= deposits:
                return round(time.monotonic() - started, 3)
            if time.monotonic() - started > AUDIT_CATCH_UP_TIMEOUT_S:
                raise RuntimeError(
                    f"the event recorder did not record {deposits:,} deposits "
                    f"in {AUDIT_CATCH_UP_TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(0.1)
    finally:
        await close_nats(nc)


async def drive(
    client: LedgerClient,
    accounts: list[str],
    *,
    concurrency: int,
    seconds: float,
    seed: int,
    run_tag: str,
    on_progress: Any = None,
    pause_s: float = 0.0,
    tally: Tally | None = None,
) -> tuple[Tally, float]:
    """Closed loop: `concurrency` virtual clients, each placing one bet at a
    time (and resting `pause_s` after each), until `seconds` have passed.
    Returns the tally (`tally` if given, filled as it goes) and elapsed time."""
    tally = Tally() if tally is None else tally
    deadline = time.monotonic() + seconds
    counter = iter(range(10**12))

    async def virtual_client(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        while time.monotonic() < deadline:
            n = next(counter)
            selection = rng.randrange(SELECTIONS)
            command = core.PlaceBet(
                request_id=f"{run_tag}-bet-{n}",
                account_id=accounts[rng.randrange(len(accounts))],
                stake_minor=rng.randint(STAKE_MIN_MINOR, STAKE_MAX_MINOR),
                legs=(
                    core.BetLeg(
                        market_id=_market_id(rng.randrange(MARKETS)),
                        selection_id=f"s{selection}",
                        odds=200 + 20 * selection,
                    ),
                ),
                price_change="any",
            )
            submitted = time.monotonic()
            try:
                outcome = await client.submit(command)
            except Exception:  # GaveUp: recorded, the run goes on
                tally.gave_up += 1
                continue
            completed = time.monotonic()
            accepted = isinstance(outcome, core.Accepted)
            tally.latencies_ms.append((completed - submitted) * 1000)
            tally.completions.append((submitted, completed, accepted))
            if accepted:
                tally.accepted += 1
            else:
                tally.rejected += 1
            if pause_s > 0:
                await asyncio.sleep(pause_s)

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(virtual_client(index))
        if on_progress is not None:
            group.create_task(on_progress(tally, deadline))
    return tally, time.monotonic() - started


async def _progress(tally: Tally, deadline: float) -> None:
    last = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        done = tally.accepted + tally.rejected
        print(f"  ... {done:,} bets ({done - last:,}/s)", file=sys.stderr, flush=True)
        last = done


async def connect_bench_client(cluster: LocalCluster, max_batch_commands: int) -> LedgerClient:
    """The load generator's client: short retries, a long deadline (a bet
    waits through a failover rather than giving up)."""
    return await connect_ledger(
        cluster.ops,
        partitions=cluster.partitions,
        config=ClientConfig(
            request_timeout_ms=1_000, deadline_ms=30_000, backoff_initial_ms=10, backoff_max_ms=200
        ),
        batching=BatchConfig(max_batch_commands=max_batch_commands),
        issuer=core.acting("bench"),
    )


async def _measure_ironbook(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    client = await connect_bench_client(cluster, args.client_batch)
    try:
        accounts = [f"acct-{i}" for i in range(args.accounts)]
        run_tag = f"r{os.getpid()}"
        print(f"setting up {args.accounts:,} accounts ...", file=sys.stderr, flush=True)
        await set_up(client, accounts, run_tag)
        audit_catch_up_s = await wait_for_recorded_deposits(cluster, len(accounts))
        print(
            f"ironbook: {args.concurrency} clients for {args.seconds} s ...",
            file=sys.stderr,
            flush=True,
        )
        meter = CpuMeter(cluster_groups(cluster))
        meter.start()
        tally, elapsed_s = await drive(
            client,
            accounts,
            concurrency=args.concurrency,
            seconds=args.seconds,
            seed=args.seed,
            run_tag=run_tag,
            on_progress=None if args.json else _progress,
        )
        cpu = meter.stop()
        placed = tally.accepted + tally.rejected
        result: dict[str, Any] = {
            "bets_per_s": round(placed / elapsed_s, 1),
            "p50_ms": percentile_ms(tally.latencies_ms, 0.50),
            "p99_ms": percentile_ms(tally.latencies_ms, 0.99),
            "p999_ms": percentile_ms(tally.latencies_ms, 0.999),
            "bets": placed,
            "accepted": tally.accepted,
            "rejected": tally.rejected,
            "gave_up": tally.gave_up,
            "elapsed_s": round(elapsed_s, 3),
            "concurrency": args.concurrency,
            "partitions": cluster.partitions,
            "commands_sent": client.attempts,
            "resends": dict(client.resends),
            "audit_catch_up_s": audit_catch_up_s,
            "cpu": cpu,
            "cpu_ms_per_bet": {
                group: round(cpu[f"{group}_cpu_s"] * 1000 / max(1, placed), 4)
                for group in (*CLUSTER_GROUPS, "monitoring", "cluster", "bench")
                if f"{group}_cpu_s" in cpu
            },
        }
        if args.failover:
            result["failover"] = await _measure_failover(cluster, client, accounts, args, run_tag)
        return result
    finally:
        await client.close()


async def _measure_failover(
    cluster: LocalCluster,
    client: LedgerClient,
    accounts: list[str],
    args: argparse.Namespace,
    run_tag: str,
) -> dict[str, Any]:
    """kill -9 the partition-0 leader under load; time to the first accepted
    bet submitted after the kill."""
    leaders = await wait_for_leaders(cluster.ops, cluster.partitions, timeout_ms=30_000)
    victim = leaders[0].node_id
    kill_at: list[float] = []

    async def killer(tally: Tally, deadline: float) -> None:
        await asyncio.sleep(2.0)
        kill_at.append(time.monotonic())
        cluster.replicas[victim].kill()
        print(f"failover: killed leader {victim} (kill -9)", file=sys.stderr, flush=True)

    tally, _ = await drive(
        client,
        accounts,
        concurrency=max(10, args.concurrency // 10),
        seconds=args.failover_seconds,
        seed=args.seed + 1,
        run_tag=f"{run_tag}-fo",
        on_progress=killer,
    )
    killed = kill_at[0]
    after = [done for submitted, done, ok in tally.completions if ok and submitted > killed]
    new_leader = await wait_for_leaders(
        cluster.ops, cluster.partitions, timeout_ms=30_000, not_node=victim
    )
    cluster.replicas[victim].start()
    return {
        "killed": victim,
        "new_leader": new_leader[0].node_id,
        "failover_s": round(min(after) - killed, 3) if after else None,
        "bets_during": tally.accepted,
        "gave_up": tally.gave_up,
    }


def _measure_postgres(args: argparse.Namespace) -> dict[str, Any]:
    return run_baseline(
        accounts=args.accounts,
        concurrency=args.pg_concurrency,
        per_bet_count=args.pg_bets,
        batched_count=args.pg_bets * 5,
        batch_size=args.pg_batch_size,
        seed=args.seed,
    )


def _measure_cluster(
    args: argparse.Namespace, *, secure: bool, checkpoints: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-") as tmp:
        settings = None
        if not checkpoints:
            settings = Path(tmp) / "settings.toml"
            settings.write_text("[audit]\ncheckpoints = false\n")
        cluster = LocalCluster(
            Path(tmp) / "cluster", partitions=args.partitions, secure=secure, config_file=settings
        )
        try:
            cluster.start()
            measured = eventloop.run(_measure_ironbook(cluster, args))
        finally:
            cluster.stop()
    return {
        "security": "on" if secure else "off",
        "checkpoints": "on" if checkpoints else "off",
        **measured,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """`--security both`: a plaintext cluster (no TLS, no identities, no
    encryption at rest) first, as the baseline, then the secured one.
    `--audit both`: a cluster with checkpoints off before the one with them
    on."""
    load_at_start = os.getloadavg()
    baseline = _measure_cluster(args, secure=False) if args.security in ("off", "both") else None
    unsigned = None
    if args.audit in ("off", "both"):
        print("ironbook with audit checkpoints off ...", file=sys.stderr, flush=True)
        # The failover is measured on the cluster reported as `ironbook` only.
        failover = args.failover and args.audit == "off"
        unsigned_args = argparse.Namespace(**{**vars(args), "failover": failover})
        unsigned = _measure_cluster(unsigned_args, secure=args.security != "off", checkpoints=False)
    if args.audit == "off":
        ironbook = unsigned
    else:
        ironbook = _measure_cluster(args, secure=True) if args.security != "off" else baseline
    assert ironbook is not None
    result: dict[str, Any] = {
        "benchmark": "ledger",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "ironbook": ironbook,
        "failover_s": (ironbook.get("failover") or {}).get("failover_s"),
    }
    if args.security == "both":
        assert baseline is not None
        result["ironbook_plaintext"] = baseline
        result["security_ratio"] = round(ironbook["bets_per_s"] / baseline["bets_per_s"], 3)
    if args.audit == "both":
        assert unsigned is not None
        result["ironbook_unsigned"] = unsigned
        result["audit_ratio"] = round(ironbook["bets_per_s"] / unsigned["bets_per_s"], 3)
    if args.monitoring:
        monitored = _measure_monitored(args)
        result["monitored"] = monitored
        result["monitoring_ratio"] = round(monitored["bets_per_s"] / ironbook["bets_per_s"], 3)
    if args.postgres:
        print("postgres: primary + synchronous standby ...", file=sys.stderr, flush=True)
        postgres = _measure_postgres(args)
        result["postgres"] = postgres["per_bet"]
        result["postgres_batched"] = postgres["batched"]
        result["ratio"] = round(ironbook["bets_per_s"] / postgres["per_bet"]["bets_per_s"], 2)
        result["ratio_batched"] = round(
            ironbook["bets_per_s"] / postgres["batched"]["bets_per_s"], 2
        )
    return result


def _measure_monitored(args: argparse.Namespace) -> dict[str, Any]:
    """The same load on a fresh cluster that runs the monitoring stack of
    `ironbook up --monitoring` (every process scraped each second, the rules
    evaluated each second), without the failover."""
    print("ironbook with monitoring ...", file=sys.stderr, flush=True)
    monitored_args = argparse.Namespace(**{**vars(args), "failover": False})

    async def measure(cluster: LocalCluster) -> dict[str, Any]:
        server = await cluster.serve_supervisor_metrics()
        assert server is not None
        async with server:
            return await _measure_ironbook(cluster, monitored_args)

    with tempfile.TemporaryDirectory(prefix="ironbook-bench-") as tmp:
        cluster = LocalCluster(
            Path(tmp) / "cluster",
            partitions=args.partitions,
            monitoring=MonitoringSettings(enabled=True),
        )
        try:
            cluster.start()
            return eventloop.run(measure(cluster))
        finally:
            cluster.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=15.0, help="measured load time (default 15)")
    p.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    p.add_argument("--concurrency", type=int, default=2_000, help="virtual clients (default 2000)")
    p.add_argument("--partitions", type=int, default=1, help="ledger partitions (default 1)")
    p.add_argument("--client-batch", type=int, default=1_000, help="max commands per request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-failover", dest="failover", action="store_false", help="skip failover")
    p.add_argument("--failover-seconds", type=float, default=8.0)
    p.add_argument("--no-postgres", dest="postgres", action="store_false", help="skip PostgreSQL")
    p.add_argument(
        "--monitoring",
        action="store_true",
        help="also run the load on a cluster with the monitoring stack (monitoring_ratio)",
    )
    p.add_argument("--pg-concurrency", type=int, default=32)
    p.add_argument("--pg-bets", type=int, default=20_000, help="bets in per-bet mode")
    p.add_argument("--pg-batch-size", type=int, default=50)
    p.add_argument(
        "--security",
        choices=("on", "off", "both"),
        default="on",
        help="NATS mutual TLS, identities and encryption at rest (default on); both: "
        "a plaintext run first, then the secured one, and their ratio",
    )
    p.add_argument(
        "--audit",
        choices=("on", "off", "both"),
        default="on",
        help="leaders sign audit checkpoints (default on); both: a run with checkpoints off "
        "first, then the one with them on, and their ratio (audit_ratio)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    ib = result["ironbook"]
    print(json.dumps(result, indent=2))
    print(
        f"\nironbook {ib['bets_per_s']:,.0f} bets/s (p50 {ib['p50_ms']} ms, p99 {ib['p99_ms']} ms)"
        f"; failover {result['failover_s']} s"
    )
    if "postgres" in result:
        print(
            f"postgres per-bet {result['postgres']['bets_per_s']:,.0f} bets/s, "
            f"batched {result['postgres_batched']['bets_per_s']:,.0f} bets/s; "
            f"ratio {result['ratio']}x, {result['ratio_batched']}x batched"
        )
    return 0
