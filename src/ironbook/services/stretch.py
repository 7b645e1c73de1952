"""Stretch mode: one NATS cluster over three sites, for RPO 0 (docs/dr.md).

    <data-dir>/dr/stretch.json   the sites: each node's site, the WAN RTT,
                                 the relay port in front of each node's routes

Nodes `n1`, `n2`, `n3` stand in sites `a`, `b`, `c` (server tags `site:a`,
...), and JetStream's `unique_tag: "site:"` places the replicas of every R3
stream one per site: an append is acknowledged once a quorum of two replicas
holds it, so every acknowledged entry is on two sites. Every route between
two nodes goes through the WAN relay, which delays each direction by half the
round-trip time. Ledger replica `p<p>-r<i>` stands in the site of node `n<i>`
and connects to that node only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import nats.errors

from ironbook.adapters.nats.localproc import LOOPBACK
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.adapters.nats.server import (
    CLUSTER_FILE,
    SITE_TAG_PREFIX,
    ClusterLayout,
    StretchPlacement,
    monitor,
)
from ironbook.services.dr import DrError, dr_dir, go_duration_ms, write_atomically

STRETCH_FILE = "stretch.json"
STRETCH_SITES = ("a", "b", "c")
"""One site per node: a stretch cluster has exactly three nodes."""
VIEW_TIMEOUT_S = 5.0
MONITOR_TIMEOUT_MS = 3_000
"""A busy server's monitoring answer may take a while; an unanswered one
leaves its node's site unknown (and its streams not shown one per site)."""


class StretchLayout(msgspec.Struct, frozen=True):
    """`dr/stretch.json`: the sites, fixed when the cluster is made (the
    round-trip time may change at a restart)."""

    wan_rtt_ms: int
    sites: dict[str, str]
    """Node name -> site."""
    relay_ports: dict[str, int]
    """Node name -> the relay port (loopback) that forwards to its route port."""

    @property
    def placement(self) -> StretchPlacement:
        return StretchPlacement(sites=self.sites, relay_ports=self.relay_ports)


def has_stretch(data_dir: Path) -> bool:
    return (dr_dir(data_dir) / STRETCH_FILE).exists()


def read_stretch(data_dir: Path) -> StretchLayout:
    path = dr_dir(data_dir) / STRETCH_FILE
    if not path.exists():
        raise DrError(f"{data_dir} is not a stretch cluster (`ironbook up --dr-mode stretch`)")
    return msgspec.json.decode(path.read_bytes(), type=StretchLayout)


def write_stretch(data_dir: Path, layout: StretchLayout) -> None:
    dr_dir(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(dr_dir(data_dir) / STRETCH_FILE, msgspec.json.encode(layout))


def new_layout(nodes: Sequence[str], relay_ports: Sequence[int], wan_rtt_ms: int) -> StretchLayout:
    """Node i in site i; `DrError` unless there are as many nodes as sites."""
    if len(nodes) != len(STRETCH_SITES) or len(relay_ports) != len(nodes):
        raise DrError(
            f"a stretch cluster has {len(STRETCH_SITES)} nodes, one per site; got {len(nodes)}"
        )
    return StretchLayout(
        wan_rtt_ms=wan_rtt_ms,
        sites=dict(zip(nodes, STRETCH_SITES, strict=True)),
        relay_ports=dict(zip(nodes, relay_ports, strict=True)),
    )


def site_of(tags: Sequence[str]) -> str | None:
    """The site a server's tags name (`site:b` -> `b`); None if none."""
    for tag in tags:
        if tag.startswith(SITE_TAG_PREFIX):
            return tag[len(SITE_TAG_PREFIX) :]
    return None


def route_rtts_ms(routez: Mapping[str, Any]) -> list[float]:
    """The round-trip times a server's `/routez` reports for its routes; a
    route not measured yet (no answer to its first ping: `0s`) is left out."""
    found = []
    for route in routez.get("routes") or ():
        rtt = go_duration_ms(str(route.get("rtt", "")))
        if rtt:
            found.append(rtt)
    return found


def route_peer_ports(routez: Mapping[str, Any]) -> list[int]:
    """The remote port of each of a server's routes: the relay's port for a
    route it dialled, the dialler's ephemeral port for one it accepted, and
    never another node's own route port when the relay carries every route."""
    return sorted({int(route["port"]) for route in routez.get("routes") or () if "port" in route})


class StreamPlacementView(msgspec.Struct, frozen=True):
    """Where one stream's replicas are: its servers and their sites."""

    stream: str
    leader: str | None
    servers: list[str]
    sites: list[str | None]
    one_per_site: bool


def stream_placement(
    stream: str, leader: str | None, peers: Sequence[str], server_sites: Mapping[str, str | None]
) -> StreamPlacementView:
    """`stream`'s leader and peers with each one's site (as its server's tags
    say); one per site when the servers are on as many distinct known sites
    as there are sites."""
    servers = sorted({*([leader] if leader else []), *peers})
    sites = [server_sites.get(server) for server in servers]
    distinct = {site for site in sites if site is not None}
    return StreamPlacementView(
        stream=stream,
        leader=leader,
        servers=servers,
        sites=sites,
        one_per_site=len(servers) == len(STRETCH_SITES) and len(distinct) == len(STRETCH_SITES),
    )


def monitor_urls(data_dir: Path) -> dict[str, str]:
    """Each node's monitoring URL, from the cluster's `nats/cluster.json`."""
    layout = msgspec.json.decode(
        (data_dir / "nats" / CLUSTER_FILE).read_bytes(), type=ClusterLayout
    )
    return {name: f"http://{LOOPBACK}:{ports.http}" for name, ports in layout.nodes.items()}


def _node_view(name: str, url: str, layout: StretchLayout) -> dict[str, Any]:
    status, varz = monitor(url, "/varz", MONITOR_TIMEOUT_MS)
    up = status == 200 and isinstance(varz, dict)
    tags = list((varz or {}).get("tags") or []) if up else []
    _, routez = monitor(url, "/routez", MONITOR_TIMEOUT_MS) if up else (0, None)
    routez = routez if isinstance(routez, dict) else {}
    return {
        "name": name,
        "site": layout.sites.get(name),
        "up": up,
        "tags": tags,
        "tagged_site": site_of(tags),
        "routes": len(routez.get("routes") or ()),
        "route_rtt_ms": sorted(round(rtt, 1) for rtt in route_rtts_ms(routez)),
        "route_peer_ports": route_peer_ports(routez),
    }


async def _streams(endpoint: NatsEndpoint) -> list[tuple[str, str | None, list[str]]] | None:
    """Every stream's (name, leader, peers) as JetStream reports them; None
    if the cluster did not answer."""
    try:
        async with asyncio.timeout(VIEW_TIMEOUT_S):
            nc = await endpoint.connect("ironbook-stretch-view")
            try:
                infos = await nc.jetstream().streams_info()
            finally:
                await close_nats(nc)
    except (TimeoutError, OSError, nats.errors.Error):
        return None
    found = []
    for info in infos:
        cluster = info.cluster
        leader = None if cluster is None else cluster.leader
        peers = [peer.name for peer in (cluster.replicas or []) if peer.name] if cluster else []
        found.append((info.config.name or "", leader, peers))
    return found


async def stretch_view(data_dir: Path, endpoint: NatsEndpoint) -> dict[str, Any]:
    """The stretch cluster in `data_dir` as its servers report it, JSON-able:
    each node's site (from its own tags), route round-trip times and the
    ports it dialled its routes on; every stream's servers and their sites."""
    layout = read_stretch(data_dir)
    urls = monitor_urls(data_dir)
    async with asyncio.TaskGroup() as group:
        asked = [
            group.create_task(asyncio.to_thread(_node_view, name, url, layout))
            for name, url in urls.items()
        ]
        listed = group.create_task(_streams(endpoint))
    nodes = [task.result() for task in asked]
    streams = listed.result()
    server_sites = {node["name"]: node["tagged_site"] for node in nodes}
    placements = [
        stream_placement(name, leader, peers, server_sites)
        for name, leader, peers in sorted(streams or [])
    ]
    return {
        "mode": "stretch",
        "wan_rtt_ms": layout.wan_rtt_ms,
        "sites": layout.sites,
        "relay_ports": layout.relay_ports,
        "route_rtt_ms": sorted(rtt for node in nodes for rtt in node["route_rtt_ms"]),
        "nodes": nodes,
        "cluster_reachable": streams is not None,
        "streams": [msgspec.to_builtins(placement) for placement in placements],
        "one_per_site": streams is not None
        and all(placement.one_per_site for placement in placements),
    }
