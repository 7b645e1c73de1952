"""`ironbook status`: the cluster as it is right now.

Nodes (NATS servers: up, healthy, JetStream meta leader), and per partition
the log's last sequence and the server leading it, the ledger leader, and
every replica's role, lag behind the log, state hash and the log entries it
quarantined (foreign entries skipped by the fold rule), and the supervised
processes restarted, held for maintenance or given up on (a crash loop).
`--json` prints the same as one JSON object (`children`: every supervised
process with its pid, state, restarts and hung kills; `monitoring`: the
Prometheus, Alertmanager and ops console URLs of `ironbook up --monitoring`,
or null).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
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


def _gather(data_dir: Path) -> dict[str, Any] | None:
    """The cluster as it is now, as JSON-able data (None: none is running)."""
    runtime = read_runtime(data_dir)
    if runtime is None:
        return None
    layout = msgspec.json.decode(
        (data_dir / "nats" / CLUSTER_FILE).read_bytes(), type=ClusterLayout
    )
    healthy = True
    nodes = []
    meta_leader = None
    for name, ports in layout.nodes.items():
        url = f"nats://{LOOPBACK}:{ports.client}"
        status, varz = _monitor(ports.http, "/varz")
        health, _ = _monitor(ports.http, "/healthz")
        up = status == 200 and isinstance(varz, dict)
        if up:
            jsz_status, jsz = _monitor(ports.http, "/jsz")
            if jsz_status == 200 and isinstance(jsz, dict):
                meta_leader = (jsz.get("meta_cluster") or {}).get("leader") or meta_leader
        nodes.append(
            {
                "name": name,
                "url": url,
                "up": up,
                "healthy": up and health == 200,
                "uptime": varz.get("uptime") if up else None,
            }
        )
        healthy &= up and health == 200
    beats = asyncio.run(collect_heartbeats(runtime.endpoint(), LISTEN_MS))
    partitions = []
    for partition in range(runtime.partitions):
        last_seq, stream_leader = _stream_state(layout, stream_name(partition))
        mine = {b.node_id: b for b in beats.values() if b.partition == partition}
        leader = next((b.node_id for b in mine.values() if b.role == "leader"), None)
        healthy &= leader is not None
        replicas: list[dict[str, Any]] = []
        for info in runtime.replicas:
            if info.partition != partition:
                continue
            beat = mine.get(info.node_id)
            if beat is None:
                replicas.append({"node_id": info.node_id, "heartbeat": False})
                healthy = False
                continue
            replicas.append(
                {
                    "node_id": info.node_id,
                    "heartbeat": True,
                    "role": beat.role,
                    "term": beat.term,
                    "applied_seq": beat.applied_seq,
                    "lag": None if last_seq is None else max(0, last_seq - beat.applied_seq),
                    "state_hash": beat.state_hash,
                    "hashed_seq": beat.hashed_seq,
                    "pid": beat.pid,
                    "metrics_url": beat.metrics_url,
                    "quarantined": beat.quarantined,
                }
            )
        partitions.append(
            {
                "partition": partition,
                "stream": stream_name(partition),
                "last_seq": last_seq,
                "stream_leader": stream_leader,
                "ledger_leader": leader,
                # Replicas agree on the count at one log position: the one
                # furthest along has seen the most.
                "quarantined": max((r.get("quarantined", 0) for r in replicas), default=0),
                "replicas": replicas,
            }
        )
    children = msgspec.to_builtins(runtime.children)
    healthy &= all(child.state != "gave_up" for child in runtime.children)
    return {
        "data_dir": str(data_dir),
        "supervisor_pid": runtime.supervisor_pid,
        "healthy": healthy,
        "nodes": nodes,
        "meta_leader": meta_leader,
        "partitions": partitions,
        "children": children,
        "monitoring": msgspec.to_builtins(runtime.monitoring),
    }


def _print(view: dict[str, Any]) -> None:
    print(f"cluster in {view['data_dir']} (supervisor pid {view['supervisor_pid']})\n")
    print("nodes:")
    for node in view["nodes"]:
        if node["up"]:
            state = "healthy" if node["healthy"] else "unhealthy"
            print(f"  {node['name']}  {node['url']:<24} up {node['uptime']}  {state}")
        else:
            print(f"  {node['name']}  {node['url']:<24} DOWN")
    print(f"  JetStream meta leader: {view['meta_leader'] or 'none'}")
    for part in view["partitions"]:
        quarantined = f"; {part['quarantined']} entries QUARANTINED" if part["quarantined"] else ""
        print(
            f"\npartition {part['partition']}: log {part['stream']} last seq {part['last_seq']} "
            f"(led by {part['stream_leader']}); ledger leader {part['ledger_leader'] or 'NONE'}"
            f"{quarantined}"
        )
        for r in part["replicas"]:
            if not r["heartbeat"]:
                print(f"  {r['node_id']:<8} no heartbeat")
                continue
            lag = "" if r["lag"] is None else f"lag {r['lag']}"
            digest = f"{r['state_hash'][:12]}@{r['hashed_seq']}" if r["state_hash"] else "-"
            print(
                f"  {r['node_id']:<8} {r['role']:<9} term {r['term']:<5} "
                f"applied {r['applied_seq']:<8} {lag:<10} hash {digest}  "
                f"quarantined {r['quarantined']}  pid {r['pid']}  metrics {r['metrics_url'] or '-'}"
            )
    troubled = [c for c in view["children"] if c["state"] != "running" or c["restarts"]]
    if troubled:
        print("\nsupervised processes restarted, held or given up on:")
        for c in troubled:
            print(
                f"  {c['name']:<12} {c['state']:<10} pid {c['pid']}  restarts {c['restarts']}  "
                f"hung kills {c['hung_kills']}  {c['last_event']}"
            )
    monitoring = view["monitoring"]
    if monitoring is not None:
        print(
            f"\nmonitoring: prometheus {monitoring['prometheus_url']}, "
            f"alertmanager {monitoring['alertmanager_url']}, console {monitoring['console_url']}"
        )
    print("\nok" if view["healthy"] else "\nDEGRADED")


def _command(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    view = _gather(data_dir)
    if view is None:
        if args.json:
            print(json.dumps({"data_dir": str(data_dir), "running": False}))
        else:
            print(f"no cluster is running from {data_dir} (start one with `ironbook up`)")
        return 1
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        _print(view)
    return 0 if view["healthy"] else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status", help="show nodes, leaders, log positions and state hashes", description=__doc__
    )
    add_data_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the view as JSON")
    parser.set_defaults(func=_command)
