"""`ironbook bench revocation`: how long a token revocation takes to reach
every gateway worker, on a real local cluster (the processes `ironbook up`
runs: 3 NATS nodes, 3 replicas, N gateway workers on one port).

Each round mints a token, opens `--connections` keep-alive HTTP connections
(the kernel spreads them over the workers) and `--websockets` odds sockets
with it, makes every connection use the token once (so each worker has it
verified and cached), then revokes it: even rounds through
`POST /v1/admin/tokens/{jti}/revoke`, odd rounds by writing the revocation
bucket the way `ironbook token revoke` does. From the moment the revocation
is sent, every connection sends requests back to back until one is refused
(401), pausing `--poll-ms` between requests (pollers that saturate the
workers would measure their own queueing), and every socket waits for its
close frame. A round's figure is its slowest connection: the time until the
last worker refused the token, counted from when the revocation was sent
(`last_ms`) and from when it was acknowledged, i.e. recorded in the bucket
(`after_ack_ms`).

    ironbook bench revocation [--rounds 20] [--workers 2] [--json]
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
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ironbook.adapters import eventloop
from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.benchmarks.children import READY_TIMEOUT_S
from ironbook.benchmarks.common import command_line, log, machine_info, wait_http_ready
from ironbook.benchmarks.stats import percentile_ms
from ironbook.services.gateway.auth import MaxLifetimes, local_signing_key, mint_token, token_id
from ironbook.services.gateway.revocation import RevocationStore
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

GATEWAY_LIMITS = {
    # Every connection polls as fast as it can from one address with one token.
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "1000000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "1000000",
    "IRONBOOK_GATEWAY_IP_BURST": "1000000",
}
GIVE_UP_S = 10.0
"""A connection still accepting the token this long after the revocation
counts as never refusing it (reported, not waited for)."""
PROBE_PATH = "/v1/markets?limit=1"


async def _poll_until_refused(
    client: httpx.AsyncClient, token: str, sent: float, poll_ms: float
) -> float | None:
    headers = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() - sent < GIVE_UP_S:
        response = await client.get(PROBE_PATH, headers=headers)
        if response.status_code == 401:
            return (time.perf_counter() - sent) * 1000
        await asyncio.sleep(poll_ms / 1000)
    return None


async def _round(
    url: str, data_dir: Path, nats: NatsEndpoint, args: argparse.Namespace, index: int
) -> dict[str, Any]:
    key = local_signing_key(data_dir)
    token = mint_token(key, role="auditor", sub=f"auditor:bench-{index}")
    admin = {"Authorization": f"Bearer {mint_token(key, role='admin')}"}
    headers = {"Authorization": f"Bearer {token}"}
    ws_url = url.replace("http://", "ws://") + "/v1/odds/stream"
    via = "admin_endpoint" if index % 2 == 0 else "bucket"
    clients = [
        httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=1))
        for _ in range(args.connections)
    ]
    # The admin's client is made and connected before the clock starts: making
    # an httpx client (its TLS context) alone took hundreds of ms under load.
    admin_client = httpx.AsyncClient(base_url=url, timeout=10)
    sockets = [await connect(ws_url, additional_headers=headers) for _ in range(args.websockets)]
    try:
        (await admin_client.get(PROBE_PATH, headers=admin)).raise_for_status()
        for client in clients:
            (await client.get(PROBE_PATH, headers=headers)).raise_for_status()
        nc = await nats.connect("bench-revocation")
        try:
            store = await RevocationStore.open(nc, replicas=3, retention_s=MaxLifetimes().longest_s)

            async def closed(ws: Any, sent: float) -> float | None:
                try:
                    async with asyncio.timeout(GIVE_UP_S):
                        while True:
                            await ws.recv()
                except ConnectionClosed:
                    return (time.perf_counter() - sent) * 1000
                except TimeoutError:
                    return None

            async def revoke(sent: float) -> float:
                if via == "admin_endpoint":
                    response = await admin_client.post(
                        f"/v1/admin/tokens/{token_id(token)}/revoke", headers=admin
                    )
                    response.raise_for_status()
                else:
                    await store.revoke(token_id(token), by="bench")
                return (time.perf_counter() - sent) * 1000

            sent = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                acked = group.create_task(revoke(sent))
                polls = [
                    group.create_task(_poll_until_refused(client, token, sent, args.poll_ms))
                    for client in clients
                ]
                closes = [group.create_task(closed(ws, sent)) for ws in sockets]
        finally:
            await close_nats(nc)
    finally:
        for client in [admin_client, *clients]:
            await client.aclose()
        for ws in sockets:
            await ws.close()
    refused_ms = [task.result() for task in polls]
    closed_ms = [task.result() for task in closes]
    known = [ms for ms in refused_ms + closed_ms if ms is not None]
    ack_ms = acked.result()
    return {
        "via": via,
        "ack_ms": round(ack_ms, 3),
        "after_ack_ms": round(max(0.0, max(known) - ack_ms), 3) if known else None,
        "http_refused_ms": [None if ms is None else round(ms, 3) for ms in refused_ms],
        "ws_closed_ms": [None if ms is None else round(ms, 3) for ms in closed_ms],
        "never_refused": len(refused_ms) + len(closed_ms) - len(known),
        "last_ms": round(max(known), 3) if known else None,
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    last = [r["last_ms"] for r in rounds if r["last_ms"] is not None]
    after_ack = [r["after_ack_ms"] for r in rounds if r["after_ack_ms"] is not None]
    acks = [r["ack_ms"] for r in rounds]
    every = [ms for r in rounds for ms in r["http_refused_ms"] + r["ws_closed_ms"] if ms]
    return {
        "rounds": len(rounds),
        "last_worker_ms_median": round(statistics.median(last), 3) if last else None,
        "last_worker_ms_max": max(last) if last else None,
        "after_ack_ms_median": round(statistics.median(after_ack), 3) if after_ack else None,
        "after_ack_ms_max": max(after_ack) if after_ack else None,
        "ack_ms_median": round(statistics.median(acks), 3) if acks else None,
        "connection_ms_median": round(statistics.median(every), 3) if every else None,
        "connection_ms_p99": percentile_ms(every, 0.99),
        "never_refused": sum(r["never_refused"] for r in rounds),
        "within_1s": all(ms <= 1_000 for ms in last) and len(last) == len(rounds),
    }


async def _measure(cluster: LocalCluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    assert cluster.http_url is not None
    await wait_http_ready(cluster.http_url, READY_TIMEOUT_S)
    rounds = []
    for index in range(args.rounds):
        result = await _round(cluster.http_url, cluster.data_dir, cluster.ops, args, index)
        log(
            f"round {index + 1}/{args.rounds} ({result['via']}): last worker {result['last_ms']} ms"
        )
        rounds.append(result)
    return rounds


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    ports = PortLease()
    (port,) = ports.take(1)
    try:
        with tempfile.TemporaryDirectory(prefix="ironbook-bench-revocation-") as tmp:
            cluster = LocalCluster(
                Path(tmp) / "cluster",
                gateway=GatewayOptions(port=port, workers=args.workers, env=GATEWAY_LIMITS),
            )
            try:
                cluster.start()
                rounds = eventloop.run(_measure(cluster, args))
            finally:
                cluster.stop()
    finally:
        ports.release()
    return {
        "benchmark": "revocation",
        "command": command_line(),
        "gateway_workers": args.workers,
        "connections": args.connections,
        "websockets": args.websockets,
        "poll_ms": args.poll_ms,
        "all": _summary(rounds),
        "admin_endpoint": _summary([r for r in rounds if r["via"] == "admin_endpoint"]),
        "bucket": _summary([r for r in rounds if r["via"] == "bucket"]),
        "rounds": rounds,
        "machine": machine_info(load_at_start),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ironbook bench revocation", description=__doc__)
    p.add_argument("--rounds", type=int, default=20, help="revocations measured (default 20)")
    p.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections per round")
    p.add_argument(
        "--poll-ms", type=float, default=10.0, help="pause between one connection's requests"
    )
    p.add_argument("--websockets", type=int, default=4, help="odds sockets per round")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.rounds < 1 or args.workers < 1 or args.connections < 1 or args.websockets < 0:
        p.error("--rounds, --workers and --connections must be positive")
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    for name in ("all", "admin_endpoint", "bucket"):
        print(f"{name}: {json.dumps(result[name])}")
    return 0
