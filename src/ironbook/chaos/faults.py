"""Faults injected into a running `LocalCluster`, each healed before the next.

Process faults (kill -9, SIGSTOP) work on any local cluster; the network
faults (`partition`, `latency`) need one built with its nodes in network
namespaces (`LocalCluster(network=NamespaceNetwork.create(3))`, see
`adapters.netns`): `unavailable(kind)` says why one cannot be injected.

Planned maintenance is a fault kind too: `drain` (one process hands its
leaderships over, stops, and comes back) and `rolling_restart` (every
process, one by one, `services.maintenance`); their write gaps are what
`ironbook chaos` compares with the crashes'.

Every fault picks its victim from what the cluster reports right now (the
replica heartbeating as leader, the server leading the partition's stream),
injects, holds for a seeded while, heals, and waits until the cluster is
whole again: every process running, every NATS node healthy, a ledger leader
for every partition. Processes are only ever signalled by their own PID.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal, get_args

import msgspec

from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.netns import NamespaceNetwork, NetnsError
from ironbook.services import maintenance
from ironbook.services.local_cluster import LocalCluster, wait_for_leaders

FaultKind = Literal[
    "leader_kill",
    "follower_kill",
    "nats_leader_kill",
    "nats_follower_kill",
    "leader_pause",
    "nats_leader_pause",
    "partition",
    "latency",
    "gateway_kill",
    "drain",
    "rolling_restart",
]
ALL_FAULTS: tuple[FaultKind, ...] = get_args(FaultKind)
NETWORK_FAULTS: tuple[FaultKind, ...] = ("partition", "latency")
"""Need the cluster's nodes in network namespaces (`LocalCluster(network=...)`)."""

LEADER_TIMEOUT_MS = 60_000
HEAL_TIMEOUT_MS = 120_000
LEASE_TTL_MS = 1_000
LATENCY_DELAY_MS = 50
LATENCY_JITTER_MS = 10


class FaultStep(msgspec.Struct, frozen=True):
    """One step of a fault made of several (a rolling restart), done at `at_wall_ms`."""

    at_wall_ms: int
    what: str


class FaultRecord(msgspec.Struct, frozen=True):
    kind: str
    target: str
    injected_wall_ms: int
    healed_wall_ms: int
    detail: str = ""
    steps: list[FaultStep] = msgspec.field(default_factory=list)


class FaultError(RuntimeError):
    """A fault could not be injected or the cluster did not heal in time."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class FaultInjector:
    def __init__(
        self,
        cluster: LocalCluster,
        rng: random.Random,
        partition: int = 0,
        rolling_what: maintenance.RollingWhat = "all",
    ) -> None:
        self.cluster = cluster
        self.rolling_what = rolling_what
        self.rng = rng
        self.partition = partition
        self.records: list[FaultRecord] = []
        self._steps: list[FaultStep] = []
        self._faults: dict[FaultKind, Callable[[], Awaitable[tuple[str, str]]]] = {
            "leader_kill": self._leader_kill,
            "follower_kill": self._follower_kill,
            "nats_leader_kill": self._nats_leader_kill,
            "nats_follower_kill": self._nats_follower_kill,
            "leader_pause": self._leader_pause,
            "nats_leader_pause": self._nats_leader_pause,
            "partition": self._partition,
            "latency": self._latency,
            "gateway_kill": self._gateway_kill,
            "drain": self._drain,
            "rolling_restart": self._rolling_restart,
        }

    def unavailable(self, kind: FaultKind) -> str | None:
        """Why `kind` cannot be injected into this cluster, or None if it can."""
        if kind in NETWORK_FAULTS and self.cluster.network is None:
            return f"{kind} needs the nodes in network namespaces; this cluster runs on loopback"
        if kind == "gateway_kill" and not self._gateway_workers():
            return "gateway_kill needs HTTP gateway workers; this cluster has none"
        return None

    def _gateway_workers(self) -> list[str]:
        return sorted(name for name in self.cluster.gateways if name.startswith("gw-"))

    async def _gateway_kill(self) -> tuple[str, str]:
        """kill -9 of one HTTP worker: its requests in flight lose their
        connection; the clients retry with the same Idempotency-Key on the
        others (the port is shared, SO_REUSEPORT)."""
        workers = self._gateway_workers()
        if not workers:
            raise FaultError("gateway_kill: this cluster has no gateway workers")
        victim = self.rng.choice(workers)
        process = self.cluster.gateways[victim]
        await asyncio.to_thread(process.kill)
        held = await self._hold(1.0, 3.0)
        await asyncio.to_thread(process.start)
        return victim, f"down {held:.1f} s"

    async def _drain(self) -> tuple[str, str]:
        """Planned maintenance of one process (`services.maintenance`): the
        server leading the partition's log or the ledger leader hands its
        leaderships over and stops, stays down for a while, and comes back."""
        if self.rng.random() < 0.5:
            stream = stream_name(self.partition)
            node = await asyncio.to_thread(self.cluster.nats.wait_stream_leader, stream)
            async with maintenance.under_maintenance(self.cluster, node, "drain"):
                done = await maintenance.drain_nats(self.cluster, node)
                held = await self._hold(1.0, 3.0)
                await asyncio.to_thread(self.cluster.nats.start_node, node, wait=False)
            return node, f"{'; '.join(done)}; down {held:.1f} s"
        victim = await self._leader()
        async with maintenance.under_maintenance(self.cluster, victim, "drain"):
            done = await maintenance.drain_replica(self.cluster, victim)
            held = await self._hold(1.0, 3.0)
            await asyncio.to_thread(self.cluster.replicas[victim].start)
        return victim, f"{'; '.join(done)}; down {held:.1f} s"

    async def _rolling_restart(self) -> tuple[str, str]:
        """Every process restarted one by one, each healthy before the next."""
        started = time.monotonic()

        def step(what: str) -> None:
            self._steps.append(FaultStep(_wall_ms(), what))

        done = await maintenance.rolling_restart(self.cluster, self.rolling_what, step)
        took_s = time.monotonic() - started
        return self.rolling_what, f"{len(done)} steps in {took_s:.0f} s"

    async def inject(self, kind: FaultKind) -> FaultRecord:
        """Inject one fault, hold it, heal it, and wait for the cluster to be whole."""
        injected = _wall_ms()
        self._steps = []
        try:
            target, detail = await self._faults[kind]()
        except (NetnsError, maintenance.MaintenanceError) as error:
            raise FaultError(f"{kind}: {error}") from error
        await self.heal_all()
        record = FaultRecord(kind, target, injected, _wall_ms(), detail, self._steps)
        self.records.append(record)
        return record

    async def _hold(self, low_s: float, high_s: float) -> float:
        seconds = self.rng.uniform(low_s, high_s)
        await asyncio.sleep(seconds)
        return seconds

    async def _leader(self) -> str:
        leaders = await wait_for_leaders(
            self.cluster.ops, self.cluster.partitions, timeout_ms=LEADER_TIMEOUT_MS
        )
        return leaders[self.partition].node_id

    async def _leader_kill(self) -> tuple[str, str]:
        victim = await self._leader()
        process = self.cluster.replicas[victim]
        await asyncio.to_thread(process.kill)
        started = time.monotonic()
        await self._new_leader(victim)
        took_ms = int((time.monotonic() - started) * 1000)
        held = await self._hold(0.5, 2.0)
        await asyncio.to_thread(process.start)
        return victim, f"new leader after {took_ms} ms; restarted after {held:.1f} s more"

    async def _follower_kill(self) -> tuple[str, str]:
        leader = await self._leader()
        victim = self.rng.choice(
            [n for n in self.cluster.replica_ids(self.partition) if n != leader]
        )
        process = self.cluster.replicas[victim]
        await asyncio.to_thread(process.kill)
        held = await self._hold(1.0, 3.0)
        await asyncio.to_thread(process.start)
        return victim, f"down {held:.1f} s"

    async def _nats_leader_kill(self) -> tuple[str, str]:
        stream = stream_name(self.partition)
        node = await asyncio.to_thread(self.cluster.nats.stream_leader, stream)
        if node is None:
            node = await asyncio.to_thread(self.cluster.nats.wait_stream_leader, stream)
        await asyncio.to_thread(self.cluster.nats.kill_node, node)
        held = await self._hold(2.0, 4.0)
        await asyncio.to_thread(self.cluster.nats.start_node, node, wait=False)
        return node, f"stream {stream} leader down {held:.1f} s"

    async def _nats_follower_kill(self) -> tuple[str, str]:
        stream = stream_name(self.partition)
        leader = await asyncio.to_thread(self.cluster.nats.stream_leader, stream)
        node = self.rng.choice([n for n in self.cluster.nats.nodes if n != leader])
        await asyncio.to_thread(self.cluster.nats.kill_node, node)
        held = await self._hold(2.0, 4.0)
        await asyncio.to_thread(self.cluster.nats.start_node, node, wait=False)
        return node, f"down {held:.1f} s (stream leader {leader})"

    async def _leader_pause(self) -> tuple[str, str]:
        victim = await self._leader()
        process = self.cluster.replicas[victim]
        await asyncio.to_thread(process.pause)
        try:
            started = time.monotonic()
            await self._new_leader(victim)
            took_ms = int((time.monotonic() - started) * 1000)
            # Frozen well past its lease, so that it wakes up deposed.
            await asyncio.sleep(LEASE_TTL_MS / 1000)
            held = await self._hold(0.5, 2.0)
        finally:
            await asyncio.to_thread(process.resume)
        return victim, f"SIGSTOP; new leader after {took_ms} ms; SIGCONT {held:.1f} s later"

    async def _nats_leader_pause(self) -> tuple[str, str]:
        """The stream's leading server frozen past a Raft election (4-9 s),
        then woken: it comes back believing it still leads, as a partitioned
        node does when its link heals."""
        stream = stream_name(self.partition)
        node = await asyncio.to_thread(self.cluster.nats.stream_leader, stream)
        if node is None:
            node = await asyncio.to_thread(self.cluster.nats.wait_stream_leader, stream)
        await asyncio.to_thread(self.cluster.nats.pause_node, node)
        try:
            held = await self._hold(6.0, 10.0)
        finally:
            await asyncio.to_thread(self.cluster.nats.resume_node, node)
        return node, f"stream {stream} leader SIGSTOP for {held:.1f} s, then SIGCONT"

    async def _pick_node(self) -> tuple[int, str]:
        """A node to cut off or slow down: seeded, sometimes the one holding
        the ledger leader, sometimes the one leading the stream."""
        why = self.rng.choice(("ledger leader", "stream leader", "any"))
        if why == "ledger leader":
            return self.cluster.node_of(await self._leader()), "holds the ledger leader"
        if why == "stream leader":
            stream = stream_name(self.partition)
            leader = await asyncio.to_thread(self.cluster.nats.stream_leader, stream)
            if leader is not None:
                return self.cluster.node_of(leader), f"holds the {stream} leader"
        return self.rng.randint(1, self.cluster.config.nats_nodes), "seeded pick"

    def _network(self) -> NamespaceNetwork:
        if self.cluster.network is None:
            raise FaultError("network faults need the cluster's nodes in network namespaces")
        return self.cluster.network

    async def _partition(self) -> tuple[str, str]:
        """Node i (its nats-server and its replicas) cut off from the other
        nodes and from the clients, then reconnected."""
        network = self._network()
        node, why = await self._pick_node()
        await asyncio.to_thread(network.cut, node)
        try:
            held = await self._hold(2.0, 6.0)
        finally:
            await asyncio.to_thread(network.heal, node)
        return f"node{node}", f"{why}; link down {held:.1f} s, then up"

    async def _latency(self) -> tuple[str, str]:
        network = self._network()
        node, why = await self._pick_node()
        how = await asyncio.to_thread(
            network.add_latency, node, LATENCY_DELAY_MS, LATENCY_JITTER_MS
        )
        try:
            held = await self._hold(2.0, 6.0)
        finally:
            await asyncio.to_thread(network.clear_latency, node)
        return f"node{node}", f"{why}; {how} for {held:.1f} s"

    async def _new_leader(self, not_node: str) -> None:
        try:
            await wait_for_leaders(
                self.cluster.ops,
                self.cluster.partitions,
                not_node=not_node,
                timeout_ms=LEADER_TIMEOUT_MS,
            )
        except TimeoutError as error:
            raise FaultError(f"no new leader after {not_node} went down: {error}") from error

    async def heal_all(self) -> None:
        """Every process running (restarted if dead, woken if paused), every
        NATS node healthy, a ledger leader for every partition."""
        cluster = self.cluster
        if cluster.network is not None:
            try:
                await asyncio.to_thread(cluster.network.heal_everything)
            except NetnsError as error:
                raise FaultError(f"the network did not heal: {error}") from error
        for name, node in cluster.nats.nodes.items():
            if node.process.is_running():
                await asyncio.to_thread(cluster.nats.resume_node, name)
            else:
                await asyncio.to_thread(cluster.nats.start_node, name, wait=False)
        for process in [*cluster.replicas.values(), *cluster.gateways.values()]:
            if process.is_running():
                await asyncio.to_thread(process.resume)
            else:
                await asyncio.to_thread(process.start)
        try:
            await asyncio.to_thread(cluster.nats.wait_healthy, HEAL_TIMEOUT_MS)
            await wait_for_leaders(cluster.ops, cluster.partitions, timeout_ms=HEAL_TIMEOUT_MS)
        except TimeoutError as error:
            raise FaultError(f"the cluster did not heal: {error}") from error
