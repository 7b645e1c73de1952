"""Benchmark: how soon after acceptance a bet's receipt is available.

Starts a local cluster with one gateway worker in a temp dir, places `--bets`
bets through the HTTP API (`--concurrency` at a time), and for each one
polls `GET /v1/bets/{id}/receipt` every `POLL_MS` from the moment its 201
arrived until a receipt comes back (a 409 means no signed checkpoint covers
it yet). Reports the time to the first receipt (median, p90, max) and checks
every receipt offline with the cluster's public key.

    ironbook bench receipts [--bets N] [--concurrency C] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ironbook.adapters.audit.keys import load_public_key
from ironbook.adapters.audit.proofs import verify_receipt
from ironbook.adapters.nats.localproc import PortLease
from ironbook.benchmarks.common import command_line, log, machine_info, wait_http_ready
from ironbook.benchmarks.http_api import MARKET_ID, UNLIMITED_ENV, setup_accounts
from ironbook.benchmarks.stats import percentile_ms
from ironbook.services.gateway.auth import local_signing_key
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

POLL_MS = 50
GIVE_UP_S = 30.0
READY_TIMEOUT_S = 60.0
ACCOUNTS = 20


async def _one_bet(
    http: httpx.AsyncClient, token: str, account_id: str, index: int
) -> tuple[float | None, bytes]:
    """(seconds from acceptance to the first receipt, or None if none came; receipt)."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "account_id": account_id,
        "stake_minor": 100,
        "legs": [{"market_id": MARKET_ID, "selection_id": f"s{index % 12}", "odds": "2.50"}],
    }
    placed = await http.post("/v1/bets", json=body, headers=headers)
    if placed.status_code != 201:
        raise RuntimeError(f"bet refused: {placed.status_code} {placed.text}")
    accepted = time.perf_counter()
    bet_id = placed.json()["bet_id"]
    while time.perf_counter() - accepted < GIVE_UP_S:
        response = await http.get(f"/v1/bets/{bet_id}/receipt", headers=headers)
        if response.status_code == 200:
            return time.perf_counter() - accepted, response.content
        if response.status_code != 409:
            raise RuntimeError(f"receipt: {response.status_code} {response.text}")
        await asyncio.sleep(POLL_MS / 1000)
    return None, b""


async def _measure(
    url: str, jobs: list[tuple[str, str]], bets: int, concurrency: int
) -> list[tuple[float | None, bytes]]:
    results: list[tuple[float | None, bytes]] = []
    slots = asyncio.Semaphore(concurrency)

    async def bet(index: int) -> None:
        async with slots:
            token, account_id = jobs[index % len(jobs)]
            results.append(await _one_bet(http, token, account_id, index))

    async with httpx.AsyncClient(base_url=url, timeout=30) as http, asyncio.TaskGroup() as group:
        for index in range(bets):
            group.create_task(bet(index))
    return results


def run(bets: int, concurrency: int) -> dict[str, object]:
    load_at_start = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="ironbook-bench-receipts-"))
    lease = PortLease()
    (port,) = lease.take(1)
    cluster = LocalCluster(
        data_dir, gateway=GatewayOptions(port=port, workers=1, env=UNLIMITED_ENV)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        cluster.start()
        asyncio.run(cluster.wait_leaders())
        asyncio.run(wait_http_ready(url, READY_TIMEOUT_S))
        jobs = setup_accounts(url, local_signing_key(data_dir), ACCOUNTS)
        log(f"placing {bets} bets, {concurrency} at a time, and polling their receipts")
        results = asyncio.run(_measure(url, jobs, bets, concurrency))
        key = load_public_key(data_dir / "audit" / "pubkey")
    finally:
        cluster.stop()
        lease.release()
        shutil.rmtree(data_dir, ignore_errors=True)
    times_ms = sorted(seconds * 1000 for seconds, _ in results if seconds is not None)
    invalid = sum(
        1 for seconds, body in results if seconds is not None and verify_receipt(key, body)
    )
    return {
        "benchmark": "receipts",
        "bets": bets,
        "concurrency": concurrency,
        "poll_ms": POLL_MS,
        "receipts": len(times_ms),
        "no_receipt_within_s": {"seconds": GIVE_UP_S, "bets": bets - len(times_ms)},
        "receipts_failing_verification": invalid,
        "available_after_ms": {
            "median": percentile_ms(times_ms, 0.5),
            "p90": percentile_ms(times_ms, 0.9),
            "max": percentile_ms(times_ms, 1.0),
        },
        "machine": machine_info(load_at_start),
        "command": command_line(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench receipts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bets", type=int, default=200, help="bets placed (default 200)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="bets in flight at once (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    if args.bets < 1 or args.concurrency < 1:
        parser.error("--bets and --concurrency are at least 1")
    result = run(args.bets, args.concurrency)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
