"""`ironbook status`: the cluster as it is right now.

Nodes (NATS servers: up, healthy, JetStream meta leader), and per partition
the log's last sequence and the server leading it, the ledger leader, and
every replica's role, lag behind the log, state hash and the log entries it
quarantined (foreign entries skipped by the fold rule), and the supervised
processes restarted, held for maintenance or given up on (a crash loop).
`--json` prints the same as one JSON object (`children`: every supervised
process with its pid, state, restarts and hung kills; `monitoring`: the
Prometheus, Alertmanager and ops console URLs of `ironbook up --monitoring`,
or null; `dr`: the DR layout's `mode`, `wan_rtt_ms` and the round-trip times
the servers measure, `route_rtt_ms` per node in stretch mode with
`one_per_site`, `link_rtt_ms` of site B's links in mirror mode, or null).
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
from ironbook.cli.dr import measured_link_rtts_ms
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.services import dr as dr_site
from ironbook.services import stretch as stretch_site
from ironbook.services.local_cluster import RuntimeInfo, collect_heartbeats, read_runtime

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
    dr = _dr_view(data_dir, runtime)
    healthy &= dr is None or dr.get("one_per_site", True)
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
        "dr": dr,
    }


def _dr_view(data_dir: Path, runtime: RuntimeInfo) -> dict[str, Any] | None:
    """The DR layout: its mode, the WAN RTT asked for and as the servers
    measure it (stretch: the routes', and whether every stream is one replica
    per site; mirror: site B's links'); None without one."""
    if stretch_site.has_stretch(data_dir):
        view = asyncio.run(stretch_site.stretch_view(data_dir, runtime.endpoint()))
        return {
            "mode": "stretch",
            "wan_rtt_ms": view["wan_rtt_ms"],
            "sites": view["sites"],
            "route_rtt_ms": {node["name"]: node["route_rtt_ms"] for node in view["nodes"]},
            "one_per_site": view["one_per_site"],
        }
    if dr_site.has_dr_site(data_dir):
        return {
            "mode": "mirror",
            "wan_rtt_ms": dr_site.read_site(data_dir).wan_rtt_ms,
            "link_rtt_ms": sorted(
                round(rtt, 1) for rtt in measured_link_rtts_ms(dr_site.dr_dir(data_dir) / "nats")
            ),
            "primary": dr_site.read_primary(data_dir).site,
        }
    return None


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
    dr = view["dr"]
    if dr is not None and dr["mode"] == "stretch":
        rtts = "; ".join(
            f"{name} (site {dr['sites'][name]}) {', '.join(str(r) for r in measured) or 'none'}"
            for name, measured in dr["route_rtt_ms"].items()
        )
        spread = "one replica per site" if dr["one_per_site"] else "NOT one replica per site"
        print(f"\ndr: stretch, WAN RTT {dr['wan_rtt_ms']} ms; route RTT ms: {rtts}; {spread}")
    elif dr is not None:
        links = ", ".join(str(rtt) for rtt in dr["link_rtt_ms"]) or "no link up"
        print(
            f"\ndr: mirror, primary site {dr['primary']}, WAN RTT {dr['wan_rtt_ms']} ms "
            f"(links measure {links})"
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
