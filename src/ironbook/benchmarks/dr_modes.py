"""`ironbook bench dr-modes [--wan-rtt-ms 30] [--seconds 15] [--json]`: what
RPO 0 costs. The same bet load against a mirror-mode cluster and a stretch
cluster at the same WAN round-trip time, one after the other in one run.

- mirror (`ironbook up --dr-site`): site A's three nodes on the local
  network, DR site B mirroring every ledger stream through the WAN relay,
  asynchronously: an append is acknowledged once two of site A's nodes hold
  it, and the WAN is not on the write path (RPO: the mirror lag).
- stretch (`ironbook up --dr-mode stretch`): one cluster over three sites,
  one replica of every stream per site, every route through the WAN relay:
  an append is acknowledged once two sites hold it (RPO 0), a WAN round trip
  (two when the ledger leader's site is not the stream leader's) per append.

Each mode gets a fresh secured cluster in a temp dir (as `ironbook up` makes
it, no feed), the same accounts, markets, virtual clients and seed as
`ironbook bench ledger` (closed loop, each client one bet at a time through
the real client library, latency from submit to durable outcome). With
`--rounds N` the modes alternate N times (mirror first), on fresh clusters.
The JSON gives per mode and round `bets_per_s`, `p50_ms`, `p99_ms`, the WAN
RTT the servers measured (site B's leafnode links, or the stretch routes)
and where the ledger leader and its stream leader were, the load average
before and after each measurement, and `stretch_vs_mirror`: stretch over
mirror for bets/s and both percentiles, per round and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from ironbook.adapters import eventloop
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.wan_relay import MAX_RTT_MS
from ironbook.benchmarks.common import command_line, log, machine_info
from ironbook.benchmarks.ledger import (
    connect_bench_client,
    drive,
    set_up,
    wait_for_recorded_deposits,
)
from ironbook.benchmarks.stats import median_or_none, percentile_ms
from ironbook.cli.dr import measured_link_rtts_ms
from ironbook.services import dr as dr_site
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.stretch import stretch_view
from ironbook.settings import DrSettings

Mode = Literal["mirror", "stretch"]
MODES: tuple[Mode, ...] = ("mirror", "stretch")
START_TIMEOUT_MS = 120_000


def _measured_rtt_ms(cluster: LocalCluster, mode: Mode) -> list[float]:
    """The WAN RTT as the servers measure it: site B's leafnode links, or
    the stretch cluster's routes."""
    if mode == "mirror":
        return measured_link_rtts_ms(dr_site.dr_dir(cluster.data_dir) / "nats")
    view = asyncio.run(stretch_view(cluster.data_dir, cluster.ops))
    rtts: list[float] = view["route_rtt_ms"]
    return rtts


async def _load(cluster: LocalCluster, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    leaders = await cluster.wait_leaders(timeout_ms=START_TIMEOUT_MS)
    client = await connect_bench_client(cluster, args.client_batch)
    try:
        accounts = [f"acct-{i}" for i in range(args.accounts)]
        await set_up(client, accounts, tag)
        await wait_for_recorded_deposits(cluster, len(accounts))
        load_before = os.getloadavg()
        tally, elapsed_s = await drive(
            client,
            accounts,
            concurrency=args.concurrency,
            seconds=args.seconds,
            seed=args.seed,
            run_tag=tag,
        )
        load_after = os.getloadavg()
    finally:
        await client.close()
    placed = tally.accepted + tally.rejected
    return {
        "bets_per_s": round(placed / elapsed_s, 1),
        "p50_ms": percentile_ms(tally.latencies_ms, 0.50),
        "p99_ms": percentile_ms(tally.latencies_ms, 0.99),
        "bets": placed,
        "accepted": tally.accepted,
        "gave_up": tally.gave_up,
        "elapsed_s": round(elapsed_s, 3),
        "ledger_leader": leaders[0].node_id,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def _measure(mode: Mode, args: argparse.Namespace, round_index: int) -> dict[str, Any]:
    log(f"round {round_index + 1}: {mode} mode, {args.wan_rtt_ms} ms WAN ...")
    with tempfile.TemporaryDirectory(prefix=f"ironbook-bench-{mode}-") as tmp:
        cluster = LocalCluster(
            Path(tmp) / "cluster",
            dr=DrSettings(enabled=True, mode=mode, wan_rtt_ms=args.wan_rtt_ms),
        )
        try:
            cluster.start(timeout_ms=START_TIMEOUT_MS)
            measured = eventloop.run(_load(cluster, args, f"{mode}-{round_index}"))
            rtts = _measured_rtt_ms(cluster, mode)
            stream_leader = cluster.nats.stream_leader(stream_name(0))
        finally:
            cluster.stop()
    node = f"n{cluster.node_of(measured['ledger_leader'])}"
    result = {
        "mode": mode,
        **measured,
        "wan_rtt_ms_measured": round(statistics.median(rtts), 1) if rtts else None,
        "stream_leader": stream_leader,
        "ledger_leader_on_stream_leader": node == stream_leader,
    }
    log(
        f"  {result['bets_per_s']:,.0f} bets/s, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms (WAN measured {result['wan_rtt_ms_measured']} ms)"
    )
    return result


def _ratio(stretch: float | None, mirror: float | None) -> float | None:
    if stretch is None or not mirror:
        return None
    return round(stretch / mirror, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        measured: dict[str, Any] = {mode: _measure(mode, args, index) for mode in MODES}
        rounds.append(
            {
                **measured,
                "stretch_vs_mirror": {
                    key: _ratio(measured["stretch"][key], measured["mirror"][key])
                    for key in ("bets_per_s", "p50_ms", "p99_ms")
                },
            }
        )
    return {
        "benchmark": "dr-modes",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "wan_rtt_ms": args.wan_rtt_ms,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "accounts": args.accounts,
        "rounds": rounds,
        "stretch_vs_mirror": {
            key: median_or_none([r["stretch_vs_mirror"][key] for r in rounds])
            for key in ("bets_per_s", "p50_ms", "p99_ms")
        },
        "took_s": round(time.monotonic() - started, 1),
    }


def _rtt_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of ms: {text!r}") from None
    if not 0 <= value <= MAX_RTT_MS:
        raise argparse.ArgumentTypeError(f"must be 0-{MAX_RTT_MS} ms: {text!r}")
    return value


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench dr-modes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--wan-rtt-ms",
        type=_rtt_ms,
        default=30,
        metavar="MS",
        help="round-trip time the relay adds between sites, both modes (default 30)",
    )
    p.add_argument(
        "--seconds", type=_positive(float), default=15.0, help="measured load per mode (default 15)"
    )
    p.add_argument(
        "--concurrency", type=_positive(int), default=200, help="virtual clients (default 200)"
    )
    p.add_argument("--accounts", type=_positive(int), default=2_000, help="accounts (default 2000)")
    p.add_argument(
        "--client-batch", type=_positive(int), default=1_000, help="max commands per request"
    )
    p.add_argument(
        "--rounds", type=_positive(int), default=1, help="mirror then stretch, this often"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(json.dumps(result, indent=2))
    ratios = result["stretch_vs_mirror"]
    print(
        f"\nstretch vs mirror at {args.wan_rtt_ms} ms: bets/s x{ratios['bets_per_s']}, "
        f"p50 x{ratios['p50_ms']}, p99 x{ratios['p99_ms']}"
    )
    return 0
