"""`ironbook status`: the cluster as it is right now.

Nodes (NATS servers: up, healthy, JetStream meta leader), and per partition
the log's last sequence and the server leading it, the ledger leader, and
every replica's role, lag behind the log and state hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import msgspec

from ironbook.adapters.nats.localproc import LOOPBACK
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.server import CLUSTER_FILE, ClusterLayout
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.services.local_cluster import collect_heartbeats, read_runtime

LISTEN_MS = 1_500


def _monitor(http_port: int, path: str) -> tuple[int, Any]:
    """GET a nats-server monitoring endpoint: (HTTP status or 0, JSON body or None)."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{http_port}{path}", timeout=1) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None
    except (OSError, ValueError):
        return 0, None


def _stream_state(layout: ClusterLayout, stream: str) -> tuple[int | None, str | None]:
    """(last sequence, leading server) as the leading server reports them."""
    for name, ports in layout.nodes.items():
        status, body = _monitor(ports.http, "/jsz?accounts=true&streams=true")
        if status != 200 or not isinstance(body, dict):
            continue
        for account in body.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") != stream:
                    continue
                cluster_info: dict[str, Any] = detail.get("cluster") or {}
                if cluster_info.get("leader") == name:
                    return int(detail["state"]["last_seq"]), name
    return None, None


def _command(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    runtime = read_runtime(data_dir)
    if runtime is None:
        print(f"no cluster is running from {data_dir} (start one with `ironbook up`)")
        return 1
    layout = msgspec.json.decode(
        (data_dir / "nats" / CLUSTER_FILE).read_bytes(), type=ClusterLayout
    )
    healthy = True
    print(f"cluster in {data_dir} (supervisor pid {runtime.supervisor_pid})\n")
    print("nodes:")
    meta_leader = None
    for name, ports in layout.nodes.items():
        url = f"nats://{LOOPBACK}:{ports.client}"
        status, varz = _monitor(ports.http, "/varz")
        health, _ = _monitor(ports.http, "/healthz")
        if status == 200 and isinstance(varz, dict):
            jsz_status, jsz = _monitor(ports.http, "/jsz")
            if jsz_status == 200 and isinstance(jsz, dict):
                meta_leader = (jsz.get("meta_cluster") or {}).get("leader") or meta_leader
            state = "healthy" if health == 200 else "unhealthy"
            print(f"  {name}  {url:<24} up {varz.get('uptime')}  {state}")
            healthy &= health == 200
        else:
            print(f"  {name}  {url:<24} DOWN")
            healthy = False
    print(f"  JetStream meta leader: {meta_leader or 'none'}")
    beats = asyncio.run(collect_heartbeats(",".join(runtime.nats_urls), LISTEN_MS))
    for partition in range(runtime.partitions):
        last_seq, stream_leader = _stream_state(layout, stream_name(partition))
        replicas = sorted(
            (b for b in beats.values() if b.partition == partition), key=lambda b: b.node_id
        )
        leader = next((b.node_id for b in replicas if b.role == "leader"), None)
        healthy &= leader is not None
        print(
            f"\npartition {partition}: log {stream_name(partition)} last seq {last_seq} "
            f"(led by {stream_leader}); ledger leader {leader or 'NONE'}"
        )
        expected = [i.node_id for i in runtime.replicas if i.partition == partition]
        for node_id in expected:
            beat = beats.get(node_id)
            if beat is None:
                print(f"  {node_id:<8} no heartbeat")
                healthy = False
                continue
            lag = "" if last_seq is None else f"lag {max(0, last_seq - beat.applied_seq)}"
            digest = f"{beat.state_hash[:12]}@{beat.hashed_seq}" if beat.state_hash else "-"
            print(
                f"  {node_id:<8} {beat.role:<9} term {beat.term:<5} applied {beat.applied_seq:<8} "
                f"{lag:<10} hash {digest}  pid {beat.pid}  metrics {beat.metrics_url or '-'}"
            )
    print("\nok" if healthy else "\nDEGRADED")
    return 0 if healthy else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status", help="show nodes, leaders, log positions and state hashes", description=__doc__
    )
    add_data_dir_argument(parser)
    parser.set_defaults(func=_command)
