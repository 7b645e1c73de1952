"""What the dashboard shows about the cluster, refreshed while the demo runs.

Replicas are seen through their heartbeats on NATS (role, term, applied log
position) and their process (running, frozen by SIGSTOP, dead); NATS nodes
through their process and their `/healthz`; the leader of each partition's
stream through the nodes' `/jsz`. The HTTP probes block, so they run in a
worker thread, about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.procfs import process_stat
from ironbook.replication.concurrency import wait_for
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.status import STATUS_SUBJECT_ALL, ReplicaHeartbeat, decode_heartbeat

HEARTBEAT_STALE_MS = 3_000
"""A replica not heard from for this long is shown as silent."""
PROBE_INTERVAL_S = 1.0


def process_state(process: ManagedProcess) -> str:
    """`up`, `frozen` (SIGSTOP), or `down`."""
    pid = process.pid
    if pid is None or not process.is_running():
        return "down"
    stat = process_stat(pid)
    if stat is None:
        return "down"
    return "frozen" if stat.state in ("T", "t") else "up"


@dataclass(slots=True)
class NodeView:
    name: str
    process: str = "down"
    healthy: bool = False
    cut_off: bool = False
    """Its node's network link is down (a partition fault)."""
    leads: list[int] = field(default_factory=list)
    """Partitions whose ledger stream this node leads."""


@dataclass(slots=True)
class ReplicaView:
    node_id: str
    partition: int
    process: str = "down"
    role: str = "?"
    term: int = 0
    applied_seq: int = 0
    heard_ms: int = 0
    """Wall time of its newest heartbeat (0: never heard)."""

    def status(self, now_ms: int) -> str:
        if self.process != "up":
            return self.process
        if not self.heard_ms or now_ms - self.heard_ms > HEARTBEAT_STALE_MS:
            return "silent"
        return self.role


@dataclass(slots=True)
class ClusterView:
    nats: list[NodeView] = field(default_factory=list)
    replicas: list[ReplicaView] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    """The feed's processes and any gateways: name -> process state."""

    def leader_of(self, partition: int, now_ms: int) -> ReplicaView | None:
        leaders = [
            r for r in self.replicas if r.partition == partition and r.status(now_ms) == "leader"
        ]
        return max(leaders, key=lambda r: r.term, default=None)


class ClusterWatcher:
    """Keeps a `ClusterView` current: heartbeats from `start()` to `close()`,
    probes while `watch(done)` runs (a task its caller's task group owns)."""

    def __init__(self, cluster: LocalCluster, nc: NatsClient) -> None:
        self.cluster = cluster
        self.nc = nc
        self.view = ClusterView(
            nats=[NodeView(name) for name in cluster.nats.nodes],
            replicas=[
                ReplicaView(node_id, partition)
                for partition in range(cluster.partitions)
                for node_id in cluster.replica_ids(partition)
            ],
        )
        self._by_id = {r.node_id: r for r in self.view.replicas}
        self._subscription: object | None = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(STATUS_SUBJECT_ALL, cb=self._on_heartbeat)

    async def close(self) -> None:
        unsubscribe = getattr(self._subscription, "unsubscribe", None)
        if unsubscribe is not None:
            with contextlib.suppress(Exception):
                await unsubscribe()

    async def _on_heartbeat(self, msg: object) -> None:
        with contextlib.suppress(msgspec.MsgspecError):
            beat = decode_heartbeat(getattr(msg, "data", b""))
            self.note(beat)

    def note(self, beat: ReplicaHeartbeat) -> None:
        replica = self._by_id.get(beat.node_id)
        if replica is None:
            return
        replica.role = beat.role
        replica.term = beat.term
        replica.applied_seq = beat.applied_seq
        replica.heard_ms = time.time_ns() // 1_000_000

    async def watch(self, done: asyncio.Event) -> None:
        """Probe every `PROBE_INTERVAL_S` until `done` is set."""
        while not done.is_set():
            await asyncio.to_thread(self.probe)
            with contextlib.suppress(TimeoutError):
                await wait_for(done.wait(), timeout=PROBE_INTERVAL_S)

    def probe(self) -> None:
        """Process states, node health and stream leaders (blocking HTTP)."""
        cluster = self.cluster
        for replica in self.view.replicas:
            replica.process = process_state(cluster.replicas[replica.node_id])
        leads: dict[str, list[int]] = {}
        for partition in range(cluster.partitions):
            leader = cluster.nats.stream_leader(stream_name(partition))
            if leader is not None:
                leads.setdefault(leader, []).append(partition)
        for node_view in self.view.nats:
            if cluster.network is not None:
                node_view.cut_off = not cluster.network.link_up(cluster.node_of(node_view.name))
            node = cluster.nats.nodes[node_view.name]
            node_view.process = process_state(node.process)
            node_view.healthy = node_view.process == "up" and node.healthy()
            node_view.leads = leads.get(node_view.name, [])
        self.view.extra = {
            name: process_state(process)
            for name, process in (cluster.feeds | cluster.gateways).items()
        }
