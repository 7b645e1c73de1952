"""HTTP benchmark: bets per second end to end through the gateway, and a flood.

    ironbook bench http [--workers N] [--seconds S] [--connections C] [--json]

Starts a local cluster (3 NATS nodes, 3 replicas, N gateway workers on one
port) in a temp dir, makes accounts and a market over HTTP, then:

1. **Throughput**: C keep-alive connections spread over several load-generator
   processes place bets as fast as they are answered (closed loop) for S
   seconds: bets/s, p50 and p99 latency.
2. **Flood**: legit clients place bets at a fixed rate (open loop) while one
   abusive client (one principal, one address) sends 10x that rate. Legit
   success rate and p99 are reported with and without the flood. Client
   addresses are told apart by `X-Forwarded-For`, which this cluster's
   gateways are configured to trust (as they would behind HAProxy).

`cpu_ms_per_bet` is the CPU each server role (nats, replicas, gateway,
history) used during the throughput phase divided by the bets placed, their
sum (`server_total`), and the load generators' own (`load_generator`). The
load generators run on the same machine as the cluster, so they compete
for the same cores: bets/s is a floor, not a ceiling, and on a shared machine
CPU per bet is the fairer measure. The client is a
minimal HTTP/1.1 writer/reader on asyncio streams (httpx would cost more CPU
than the gateway itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ironbook.adapters import eventloop
from ironbook.adapters.nats.localproc import ManagedProcess, PortLease
from ironbook.benchmarks.common import machine_info, wait_http_ready
from ironbook.benchmarks.cpu import CpuMeter, cluster_groups
from ironbook.benchmarks.stats import percentile_ms
from ironbook.services.gateway.auth import SigningKey, local_signing_key, mint_token
from ironbook.services.local_cluster import GatewayOptions, LocalCluster
from ironbook.services.process import process_command

UNLIMITED_ENV = {
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "1000000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_IP_BURST": "1000000",
}
FLOOD_LIMITS_ENV = {
    # For the host (each worker enforces its share): well above what one legit
    # client sends (a few bets a second), far below what the abuser sends.
    "IRONBOOK_GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "10",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "20",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "20",
    "IRONBOOK_GATEWAY_IP_BURST": "40",
}
READY_TIMEOUT_S = 60.0
UNANSWERED_AFTER_S = 30.0
ROLES = {"nats": "nats", "replicas": "replicas", "gateway": "gateways", "history": "history"}
"""The keys of `cpu_ms_per_bet`: role -> CPU meter group."""
MARKET_ID = "bench-race"
SELECTIONS = 12


@dataclass(frozen=True)
class Target:
    host: str
    port: int


def _bet_request(target: Target, token: str, account_id: str, n: int, ip: str) -> bytes:
    body = json.dumps(
        {
            "account_id": account_id,
            "stake_minor": 100,
            "legs": [
                {"market_id": MARKET_ID, "selection_id": f"s{n % SELECTIONS}", "odds": "2.50"}
            ],
            "price_change": "any",
        }
    ).encode()
    head = (
        f"POST /v1/bets HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-For: {ip}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _closed_loop(
    target: Target, jobs: list[tuple[str, str]], seconds: float, conn_index: int
) -> tuple[int, int, list[float]]:
    """Bets back to back on `len(jobs)` connections; (ok, failed, latencies)."""
    ok = failed = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def connection(token: str, account_id: str, offset: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection(target.host, target.port)
        n = offset
        ip = f"10.1.{conn_index % 250}.{offset % 250 + 1}"
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await _roundtrip(
                    reader, writer, _bet_request(target, token, account_id, n, ip)
                )
                latencies.append(time.perf_counter() - started)
                if status == 201:
                    ok += 1
                else:
                    failed += 1
                n += 1
        finally:
            writer.close()

    async with asyncio.TaskGroup() as group:
        for index, (token, account_id) in enumerate(jobs):
            group.create_task(connection(token, account_id, index))
    return ok, failed, latencies


async def _open_loop(
    target: Target,
    jobs: list[tuple[str, str, str]],
    rate_per_s: float,
    seconds: float,
    connections: int,
    may_grow: bool,
) -> tuple[int, int, list[float], dict[int, int]]:
    """`rate_per_s` bets at fixed intervals over a pool of connections. When
    every connection is busy, a legit client (`may_grow`) opens another, so a
    slow server cannot slow the offered load down; the abuser's pool is fixed
    (its unsent requests count as failed), or the load generator itself would
    eat the machine the server runs on. Requests unanswered 30 s after the
    end count as failed."""
    ok = failed = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(connections):
        idle.append(await asyncio.open_connection(target.host, target.port))
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        nonlocal ok, failed
        token, account_id, ip = jobs[n % len(jobs)]
        if not idle and not may_grow:
            failed += 1
            return
        conn = idle.pop() if idle else await asyncio.open_connection(target.host, target.port)
        started = time.perf_counter()
        try:
            status = await _roundtrip(*conn, _bet_request(target, token, account_id, n, ip))
        except (OSError, asyncio.IncompleteReadError):
            failed += 1
            conn[1].close()
            return
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 201:
            ok += 1
        else:
            failed += 1
        idle.append(conn)

    interval_s = 1 / rate_per_s
    start = time.perf_counter()
    n = 0
    async with asyncio.TaskGroup() as group:
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) / interval_s)
            while n <= due:
                task = group.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(interval_s / 2 if interval_s < 0.002 else 0.001)
        if tasks:
            _, unanswered = await asyncio.wait(tasks, timeout=UNANSWERED_AFTER_S)
            failed += len(unanswered)
            for task in unanswered:
                task.cancel()
    for _, writer in idle:
        writer.close()
    return ok, failed, latencies, statuses


def _closed_worker(
    args: tuple[Target, list[tuple[str, str]], float, int],
) -> tuple[int, int, list[float], float]:
    """(ok, failed, latencies, CPU seconds this load generator used)."""
    cpu_before_s = time.process_time()
    ok, failed, latencies = eventloop.run(_closed_loop(*args))
    return ok, failed, latencies, time.process_time() - cpu_before_s


def _open_worker(
    args: tuple[Target, list[tuple[str, str, str]], float, float, int, bool],
) -> tuple[int, int, list[float], dict[int, int]]:
    return eventloop.run(_open_loop(*args))


def _ms(latencies_s: list[float]) -> list[float]:
    return [x * 1000 for x in latencies_s]


def setup_accounts(url: str, secret: SigningKey, accounts: int) -> list[tuple[str, str]]:
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin')}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.post(
            "/v1/markets",
            json={
                "market_id": MARKET_ID,
                "event": "bench",
                "name": "Win",
                "selections": [
                    {"selection_id": f"s{i}", "name": f"Runner {i}", "odds": "2.50"}
                    for i in range(SELECTIONS)
                ],
                "reason": "benchmark market",
            },
            headers=admin,
        )
        assert response.status_code in (201, 409), response.text
        jobs = []
        for i in range(accounts):
            account_id = f"bench-{i}"
            http.post("/v1/accounts", json={"account_id": account_id}, headers=admin)
            deposit = http.post(
                f"/v1/accounts/{account_id}/deposits",
                json={"amount_minor": 10**11, "reason": "benchmark top-up"},
                headers=admin,
            )
            assert deposit.status_code == 201, deposit.text
            jobs.append((mint_token(secret, role="bettor", account_id=account_id), account_id))
    return jobs


def _throughput(
    target: Target, jobs: list[tuple[str, str]], connections: int, seconds: float, procs: int
) -> dict[str, float | None]:
    per_proc: list[list[tuple[str, str]]] = [[] for _ in range(procs)]
    for i in range(connections):
        per_proc[i % procs].append(jobs[i % len(jobs)])
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(
            _closed_worker,
            [(target, chunk, seconds, index) for index, chunk in enumerate(per_proc)],
        )
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    return {
        "bets_per_s": round(ok / seconds, 1),
        "failed": failed,
        "p50_ms": percentile_ms(_ms(latencies), 0.50),
        "p99_ms": percentile_ms(_ms(latencies), 0.99),
        "load_generator_cpu_s": round(sum(r[3] for r in results), 3),
    }


def _flood(
    target: Target,
    secret: SigningKey,
    jobs: list[tuple[str, str]],
    legit_rate: float,
    seconds: float,
    with_flood: bool,
) -> dict[str, object]:
    legit_jobs = [
        (token, account, f"10.2.0.{i % 250 + 1}") for i, (token, account) in enumerate(jobs[1:])
    ]
    abuser_account = jobs[0][1]
    abuser = [
        (mint_token(secret, role="bettor", account_id=abuser_account), abuser_account, "10.66.6.6")
    ]
    work = [(target, legit_jobs, legit_rate, seconds, 32, True)]
    if with_flood:
        work.append((target, abuser, legit_rate * 10, seconds, 128, False))
    with multiprocessing.get_context("spawn").Pool(len(work)) as pool:
        results = pool.map(_open_worker, work)
    ok, failed, latencies, statuses = results[0]
    result: dict[str, object] = {
        "legit_offered_per_s": legit_rate,
        "legit_success_rate": round(ok / max(1, ok + failed), 4),
        "legit_p50_ms": percentile_ms(_ms(latencies), 0.50),
        "legit_p99_ms": percentile_ms(_ms(latencies), 0.99),
        "legit_statuses": statuses,
    }
    if with_flood:
        a_ok, _, _, a_statuses = results[1]
        result["abuser_offered_per_s"] = legit_rate * 10
        result["abuser_accepted"] = a_ok
        result["abuser_statuses"] = a_statuses
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--load-procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--accounts", type=int, default=64)
    parser.add_argument(
        "--legit-rate", type=float, default=200.0, help="legit bets/s in the flood test"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the temporary cluster directory (logs, JetStream store) instead of "
        "deleting it at the end",
    )
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="ironbook-bench-http-"))
    lease = PortLease()
    port, flood_port = lease.take(2)
    report: dict[str, object] = {
        "machine": machine_info(os.getloadavg()),
        "gateway_workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
    }
    cluster = LocalCluster(
        data_dir, gateway=GatewayOptions(port=port, workers=args.workers, env=UNLIMITED_ENV)
    )
    url = f"http://127.0.0.1:{port}"
    flood_workers: list[ManagedProcess] = []
    try:
        cluster.start()
        asyncio.run(cluster.wait_leaders())
        eventloop.run(wait_http_ready(url, READY_TIMEOUT_S))
        secret = local_signing_key(cluster.data_dir)
        jobs = setup_accounts(url, secret, args.accounts)
        meter = CpuMeter(cluster_groups(cluster))
        meter.start()
        report.update(
            _throughput(
                Target("127.0.0.1", port), jobs, args.connections, args.seconds, args.load_procs
            )
        )
        cpu = meter.stop()
        bets = float(report["bets_per_s"]) * args.seconds  # type: ignore[arg-type]
        cpu_ms_per_bet = {
            role: round(cpu[f"{group}_cpu_s"] * 1000 / max(1.0, bets), 3)
            for role, group in ROLES.items()
        }
        cpu_ms_per_bet["server_total"] = round(sum(cpu_ms_per_bet.values()), 3)
        load_generator_s = float(report.pop("load_generator_cpu_s"))  # type: ignore[arg-type]
        cpu_ms_per_bet["load_generator"] = round(load_generator_s * 1000 / max(1.0, bets), 3)
        report["cpu_ms_per_bet"] = cpu_ms_per_bet
        # The flood runs against workers with production-like limits, in place
        # of the throughput workers (which had none, so as to measure capacity).
        for name, process in cluster.gateways.items():
            if name.startswith("gw-"):
                process.stop()
        flood_workers = [
            _gateway_worker(cluster, f"flood-{index}", flood_port, FLOOD_LIMITS_ENV)
            for index in range(1, args.workers + 1)
        ]
        for process in flood_workers:
            process.start()
        eventloop.run(wait_http_ready(f"http://127.0.0.1:{flood_port}", READY_TIMEOUT_S))
        target = Target("127.0.0.1", flood_port)
        without = _flood(target, secret, jobs, args.legit_rate, args.seconds, False)
        with_flood = _flood(target, secret, jobs, args.legit_rate, args.seconds, True)
        report["flood"] = {
            "legit_success_rate": with_flood["legit_success_rate"],
            "legit_p99_ms": with_flood["legit_p99_ms"],
            "limits_per_worker": FLOOD_LIMITS_ENV,
            "without": without,
            "with": with_flood,
        }
    finally:
        for process in flood_workers:
            process.stop()
        cluster.stop()
        lease.release()
        if args.keep_data:
            print(f"cluster data kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['bets_per_s']} bets/s, p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms "
            f"({args.workers} workers, {args.connections} connections)"
        )
        print(json.dumps(report["flood"], indent=2))
    return 0


def _gateway_worker(
    cluster: LocalCluster, name: str, port: int, env: dict[str, str]
) -> ManagedProcess:
    return ManagedProcess(
        name,
        [
            *process_command("gateway", []),
            "--nats",
            cluster.nats_url,
            "--partitions",
            str(cluster.partitions),
            "--port",
            str(port),
            "--data-dir",
            str(cluster.data_dir),
            "--worker-id",
            name,
        ],
        log_path=cluster.data_dir / "logs" / f"{name}.log",
        env={**cluster.child_env, **env},
    )


if __name__ == "__main__":
    sys.exit(main())
