"""One simulated run of a whole partition: replicas, the log cluster, clients
and a seeded fault schedule, on virtual time. Then a heal, a last round of
retries, and the checker's verdict.

    result = run_seed(42)
    assert result.ok, result.violations

One seed is one exact replay, in any process (`fingerprint` proves it).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Literal

from ironbook import core
from ironbook.replication.batch import (
    admit,
    encode_batch,
    encode_signed_batch,
    skipped_seqs,
)
from ironbook.replication.checker import Violation, check_history
from ironbook.replication.client import BadRequest, BatchConfig, ClientConfig, GaveUp
from ironbook.replication.concurrency import cancel_and_wait
from ironbook.replication.follower import Follower, FollowerConfig, restore
from ironbook.replication.history import Operation, answered
from ironbook.replication.ledger_client import LedgerClient
from ironbook.replication.replica import Replica, ReplicaConfig
from ironbook.replication.sequencer import SequencerConfig
from ironbook.replication.sim.clock import SimClock
from ironbook.replication.sim.faults import (
    Fault,
    FaultPlan,
    plan_faults,
    plan_foreign_entries,
)
from ironbook.replication.sim.host import Host, HostDown
from ironbook.replication.sim.lease import LeaseService, SimLease
from ironbook.replication.sim.log import LogService, SimLog
from ironbook.replication.sim.loop import SimDeadlock, SimTimeLimit, VirtualTimeLoop, run_virtual
from ironbook.replication.sim.network import Network
from ironbook.replication.sim.signing import MacSigner
from ironbook.replication.sim.snapshots import SimSnapshotStore, SnapshotService
from ironbook.replication.sim.transport import RequestBus, SimCommandTransport, SimRequestServer
from ironbook.replication.sim.workload import make_workload

SIM_LEDGER = core.LedgerConfig(result_slice_bets=2)
"""Results in slices of 2 bets: a settlement spans several log entries, so
faults land in the middle of one."""

Mutation = Literal["none", "reply_before_ack", "skip_fencing", "skip_chain_check"]
"""Deliberate protocol bugs the checker must catch (tests only):
`reply_before_ack` answers clients before their batch is durable;
`skip_fencing` turns both fences off (the log ignores the expected last
sequence, and every batch's predecessor is forged so replay voids nothing);
`skip_chain_check` keeps the log's expected-sequence check but forges the
predecessors (replay voids nothing)."""


@dataclass(frozen=True, slots=True)
class SimTiming:
    lease_ttl_ms: int = 1_000
    lease_renew_interval_ms: int = 250
    lease_retry_ms: int = 250
    cluster_request_timeout_ms: int = 150
    """Append, read and lease calls: past this the outcome is unknown."""
    dedupe_window_ms: int = 120_000
    client_request_timeout_ms: int = 400
    client_deadline_ms: tuple[int, ...] = (1_000, 3_000, 6_000)
    """One is drawn per run: short deadlines make clients give up mid-fault,
    leaving outcomes unknown until they ask again after the heal."""
    client_max_batch_commands: int = 4
    client_inflight_batches: tuple[int, ...] = (1, 2, 4)
    """One is drawn per run: with fewer batch requests in flight than
    clients, commands queue up and travel together."""
    fault_window_ms: int = 1_500
    """Timed faults start within this long after the run starts, and client
    traffic is spread over it."""
    settle_timeout_ms: int = 30_000
    """After the heal, the replicas must agree within this long."""


@dataclass(frozen=True, slots=True)
class SimOptions:
    replicas: int = 3
    clients: int = 3
    commands_per_client: int = 8
    accounts: int = 3
    duplicate_submit_rate: float = 0.1
    """Chance a client sends a command again after hearing its outcome."""
    mutation: Mutation = "none"
    trace: bool = False
    """Record a timeline (faults, crashes, lease grants, appends) in the result."""
    timing: SimTiming = field(default_factory=SimTiming)
    max_virtual_ms: int = 600_000
    faults: FaultPlan | None = None
    """A fixed fault plan instead of the seed's (for scenario tests)."""


@dataclass(frozen=True, slots=True)
class SimResult:
    seed: int
    violations: tuple[Violation, ...]
    log_entries: int
    void_entries: int
    """Entries written by deposed leaders and skipped by replay."""
    quarantined_entries: int
    """Foreign entries (undecodable, or not signed by the replicas' key)
    skipped by replay."""
    outcomes_heard: int
    gave_up: int
    """Commands clients gave up on while the faults lasted (all were sent
    again after the heal)."""
    commands_sent: int
    """By the clients, resends included."""
    requests_sent: int
    """Batch requests carrying those commands (fewer: commands travelled
    together)."""
    lease_grants: int
    crashes: int
    faults: tuple[str, ...]
    virtual_ms: int
    fingerprint: str
    """SHA-256 of the log and of every outcome heard: equal across replays."""
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations


def run_seed(seed: int, options: SimOptions | None = None) -> SimResult:
    """Simulate one seeded run and check it."""
    chosen = options or SimOptions()

    async def main(loop: VirtualTimeLoop) -> SimResult:
        return await _World(loop, seed, chosen).run()

    try:
        return run_virtual(main, max_virtual_ms=chosen.max_virtual_ms)
    except (SimDeadlock, SimTimeLimit) as error:
        return SimResult(
            seed=seed,
            violations=(Violation("liveness", f"{type(error).__name__}: {error}"),),
            log_entries=0,
            void_entries=0,
            quarantined_entries=0,
            outcomes_heard=0,
            gave_up=0,
            commands_sent=0,
            requests_sent=0,
            lease_grants=0,
            crashes=0,
            faults=(),
            virtual_ms=chosen.max_virtual_ms,
            fingerprint="",
        )


@dataclass(slots=True)
class _Node:
    host: Host
    replica: Replica


class _World:
    def __init__(self, loop: VirtualTimeLoop, seed: int, options: SimOptions) -> None:
        self._loop = loop
        self._seed = seed
        self._options = options
        timing = options.timing
        root = random.Random(seed)
        # Independent streams, so adding a draw in one place does not shift
        # every other decision of the run.
        self._fault_rng = random.Random(root.getrandbits(64))
        self._workload_rng = random.Random(root.getrandbits(64))
        self._replica_rng = random.Random(root.getrandbits(64))
        self._client_rng = random.Random(root.getrandbits(64))
        self._network = Network(loop, random.Random(root.getrandbits(64)))
        self._bus = RequestBus(
            loop, self._network, random.Random(root.getrandbits(64)), inbox_capacity=256
        )
        self._signer = MacSigner(b"the simulated replicas' key")
        self._log = LogService(
            loop,
            now_ms=loop.now_ms,
            dedupe_window_ms=timing.dedupe_window_ms,
            enforce_expected_seq=options.mutation != "skip_fencing",
            forge_predecessor=self._signer
            if options.mutation in ("skip_fencing", "skip_chain_check")
            else None,
        )
        self._log.on_append = self._after_append
        self._timeline: list[str] = []
        if options.trace:
            self._log.trace = self._trace
        self._lease = LeaseService(now_ms=loop.now_ms, ttl_ms=timing.lease_ttl_ms)
        if options.trace:
            self._lease.trace = self._trace
        self._snapshots = SnapshotService()
        self._replica_config = ReplicaConfig(
            lease_ttl_ms=timing.lease_ttl_ms,
            lease_renew_interval_ms=timing.lease_renew_interval_ms,
            lease_retry_ms=timing.lease_retry_ms,
            follower_read_wait_ms=1_000,
            io_retry_backoff_ms=20,
            ledger=SIM_LEDGER,
            follower=FollowerConfig(
                read_max_entries=16,
                snapshot_every_entries=4,
                snapshot_log_ratio=0.0,
                io_retry_backoff_ms=20,
            ),
            sequencer=SequencerConfig(
                max_batch_commands=8,
                batch_linger_ms=1,
                max_inflight_appends=4,
                append_attempts=4,
                append_retry_backoff_ms=20,
                idle_receive_wait_ms=1_000,
                reply_before_ack=options.mutation == "reply_before_ack",
            ),
        )
        self._client_config = ClientConfig(
            request_timeout_ms=timing.client_request_timeout_ms,
            deadline_ms=random.Random(root.getrandbits(64)).choice(timing.client_deadline_ms),
            backoff_initial_ms=20,
            backoff_max_ms=400,
        )
        self._batching = BatchConfig(
            max_batch_commands=timing.client_max_batch_commands,
            max_inflight_batches=random.Random(root.getrandbits(64)).choice(
                timing.client_inflight_batches
            ),
        )
        self._foreign_rng = random.Random(root.getrandbits(64))
        self._foreign_published = 0
        self._nodes: dict[str, _Node] = {}
        self._tasks: list[asyncio.Task[object]] = []
        self._clients: list[LedgerClient] = []
        self._replica_tasks: dict[str, asyncio.Task[object]] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._plan: FaultPlan | None = None
        self._faults_active = False
        self._triggered_crashes = 0
        self._crashes = 0
        self._observations: list[Operation] = []
        self._answered: list[tuple[int, core.AnyCommand]] = []
        self._gave_up: list[tuple[int, core.AnyCommand]] = []
        self._gave_up_under_faults = 0
        self._violations: list[Violation] = []

    def _trace(self, line: str) -> None:
        self._timeline.append(f"{self._loop.now_ns / 1e6:10.3f} ms  {line}")

    # Replicas.

    def _start_replica(self, name: str) -> None:
        previous = self._nodes.get(name)
        host = Host(name, previous.host.incarnation + 1 if previous else 1)
        if previous is not None and self._options.trace:
            self._trace(f"restart: {name} restores the newest snapshot and replays the log")
        timing = self._options.timing
        network = self._network
        replica = Replica(
            name,
            log=SimLog(
                self._log,
                network,
                host,
                now_ms=self._loop.now_ms,
                request_timeout_ms=timing.cluster_request_timeout_ms,
                before_append=self._before_append,
            ),
            lease=SimLease(
                self._lease, network, host, request_timeout_ms=timing.cluster_request_timeout_ms
            ),
            snapshots=SimSnapshotStore(
                self._snapshots,
                network,
                host,
                request_timeout_ms=timing.cluster_request_timeout_ms,
            ),
            server=SimRequestServer(self._bus, host, inbox_capacity=256),
            clock=SimClock(self._loop, host),
            rng=random.Random(self._replica_rng.getrandbits(64)),
            config=self._replica_config,
            signer=self._signer,
            verifier=self._signer,
        )
        self._nodes[name] = _Node(host, replica)
        task: asyncio.Task[object] = self._loop.create_task(replica.run())
        task.add_done_callback(self._on_replica_exit)
        self._tasks.append(task)
        self._replica_tasks[name] = task

    def _on_replica_exit(self, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, HostDown):
            self._violations.append(Violation("replica_failed", f"{type(error).__name__}: {error}"))

    def _crash(self, name: str, restart_after_ms: int) -> None:
        node = self._nodes[name]
        if not node.host.alive:
            return
        self._crashes += 1
        if self._options.trace:
            self._trace(
                f"crash: {name} (role {node.replica.status().role}), back in {restart_after_ms} ms"
            )
        node.host.crash()
        self._bus.drop_host(node.host)
        self._replica_tasks[name].cancel()
        self._timers.append(self._loop.call_later(restart_after_ms / 1000, self._restart, name))

    def _restart(self, name: str) -> None:
        if not self._nodes[name].host.alive:
            self._start_replica(name)

    def _leader_name(self) -> str | None:
        for name, node in self._nodes.items():
            if node.host.alive and node.replica.status().role == "leader":
                return name
        return None

    # Faults.

    def _arm(self, plan: FaultPlan) -> None:
        self._plan = plan
        self._faults_active = True
        self._network.faults.loss_rate = plan.loss_rate
        self._network.faults.spike_rate = plan.spike_rate
        for fault in plan.faults:
            self._timers.append(self._loop.call_later(fault.at_ms / 1000, self._inject, fault))

    def _inject(self, fault: Fault) -> None:
        duration_s = fault.duration_ms / 1000
        target = f"r{fault.target}"
        leader = self._leader_name() or target
        if self._options.trace:
            self._trace(f"fault: {fault.describe()} (leader {self._leader_name()})")
        if fault.kind == "crash_leader":
            self._crash(leader, fault.duration_ms)
        elif fault.kind == "crash_replica":
            self._crash(target, fault.duration_ms)
        elif fault.kind == "pause_leader":
            host = self._nodes[leader].host
            host.pause()
            self._timers.append(self._loop.call_later(duration_s, host.resume))
        elif fault.kind == "isolate_leader":
            self._network.isolate(leader, True)
            self._timers.append(
                self._loop.call_later(duration_s, self._network.isolate, leader, False)
            )
        elif fault.kind == "expire_lease":
            self._lease.expire_now()
        elif fault.kind == "cluster_down":
            self._network.faults.cluster_down = True
            self._timers.append(self._loop.call_later(duration_s, self._cluster_up))
        elif fault.kind == "foreign_entries":
            for _ in range(fault.target):
                self._publish_foreign()
        elif fault.kind == "lag_follower":
            self._network.slow_down(target, "log", 20 + self._fault_rng.random() * 300)
            self._timers.append(
                self._loop.call_later(duration_s, self._network.slow_down, target, "log", 0.0)
            )

    def _publish_foreign(self) -> None:
        """One entry from a writer outside the protocol, at the log's end:
        garbage, or a well-formed batch chained onto the real tip that the
        replicas' key did not sign (signed with another key; a real signed
        payload re-published under a new id; unsigned, on a signed chain)."""
        rng = self._foreign_rng
        tip_batch_id, tip_events = "", b""
        for entry in self._log.entries:
            verdict = admit(entry, tip_batch_id, self._signer)
            if verdict.events is not None:
                tip_batch_id = entry.batch_id
                tip_events = core.encode_events(verdict.events)
        self._foreign_published += 1
        batch_id = f"foreign-{self._foreign_published}"
        kind = rng.choice(("garbage", "other_key", "replayed", "unsigned"))
        if kind == "other_key":
            # The last applied batch's events again: applied, they would pay
            # its deposits twice.
            payload = encode_signed_batch(
                MacSigner(b"not the replicas' key"), batch_id, tip_batch_id, tip_events
            )
        elif kind == "replayed" and tip_batch_id:
            payload = self._log.entries[-1].payload
        elif kind == "unsigned" and tip_batch_id:
            payload = encode_batch(tip_batch_id, core.decode_events(tip_events))
        else:
            kind = "garbage"
            payload = rng.randbytes(rng.randint(0, 64))
        if self._options.trace:
            self._trace(f"fault: foreign entry ({kind}) after {tip_batch_id or '-'}")
        self._log.publish_foreign(payload, batch_id)

    def _cluster_up(self) -> None:
        self._network.faults.cluster_down = False

    def _triggered_crash(self, host: Host, rate: float) -> None:
        plan = self._plan
        if (
            not self._faults_active
            or plan is None
            or not rate
            or self._triggered_crashes >= plan.max_triggered_crashes
            or not host.alive
            or self._fault_rng.random() >= rate
        ):
            return
        self._triggered_crashes += 1
        self._crash(host.name, self._fault_rng.randint(50, 2_000))

    def _before_append(self, host: Host) -> None:
        if self._plan is not None:
            self._triggered_crash(host, self._plan.crash_before_append_rate)

    def _after_append(self, writer: str, seq: int) -> None:
        node = self._nodes.get(writer)
        if self._plan is not None and node is not None:
            self._triggered_crash(node.host, self._plan.crash_after_append_rate)

    def _heal(self) -> None:
        if self._options.trace:
            self._trace("heal: faults off, crashed replicas restart, paused ones resume")
        self._faults_active = False
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._network.heal()
        for name, node in list(self._nodes.items()):
            if not node.host.alive:
                self._start_replica(name)
            elif node.host.paused:
                node.host.resume()

    # Clients.

    def _client(self, config: ClientConfig) -> LedgerClient:
        """The client that ships, on the simulated network: every workload
        client submits through it (as a gateway's requests share one), so
        concurrent commands share batch requests."""
        host = Host("clients", 1)
        client = LedgerClient(
            SimCommandTransport(self._bus, self._network, host),
            partitions=1,
            clock=SimClock(self._loop, host),
            rng=random.Random(self._client_rng.getrandbits(64)),
            config=config,
            batching=self._batching,
            issuer=core.acting("sim"),
        )
        self._clients.append(client)
        return client

    async def _submit(self, index: int, client: LedgerClient, command: core.AnyCommand) -> bool:
        invoke_ns = self._loop.now_ns
        try:
            outcome = await client.submit(command)
        except GaveUp:
            if self._options.trace:
                self._trace(f"client c{index}: gave up on {command.request_id}")
            self._gave_up.append((index, command))
            return False
        except BadRequest as error:
            self._violations.append(Violation("bad_request", f"{command.request_id}: {error}"))
            return False
        complete_ns = self._loop.now_ns
        self._observations.append(
            answered(
                f"c{index}",
                command,
                outcome,
                invoke_ns=invoke_ns,
                complete_ns=complete_ns,
                invoke_wall_ms=invoke_ns // 1_000_000,
                complete_wall_ms=complete_ns // 1_000_000,
            )
        )
        self._answered.append((index, command))
        return True

    async def _run_client(
        self, index: int, client: LedgerClient, commands: list[core.AnyCommand]
    ) -> None:
        # Think time spreads each client's commands over the fault window, so
        # the timed faults meet traffic instead of an idle, finished run.
        mean_pause_s = self._options.timing.fault_window_ms / 1000 / max(1, len(commands))
        for command in commands:
            await asyncio.sleep(self._workload_rng.uniform(0, 2 * mean_pause_s))
            answered = await self._submit(index, client, command)
            if answered and self._workload_rng.random() < self._options.duplicate_submit_rate:
                await self._submit(index, client, command)

    async def _all(self, coroutines: list[asyncio.Task[object]]) -> None:
        self._tasks.extend(coroutines)
        for task in coroutines:
            await task

    # The run.

    async def run(self) -> SimResult:
        options = self._options
        timing = options.timing
        for index in range(options.replicas):
            self._start_replica(f"r{index}")
        plan = plan_faults(
            self._fault_rng,
            replicas=options.replicas,
            window_ms=timing.fault_window_ms,
            lease_ttl_ms=timing.lease_ttl_ms,
        )
        foreign = plan_foreign_entries(self._foreign_rng, window_ms=timing.fault_window_ms)
        plan = replace(
            plan, faults=tuple(sorted((*plan.faults, *foreign), key=lambda f: (f.at_ms, f.kind)))
        )
        if options.faults is not None:
            plan = options.faults
        self._arm(plan)
        workloads = make_workload(
            self._workload_rng,
            clients=options.clients,
            commands_per_client=options.commands_per_client,
            accounts=options.accounts,
        )
        client = self._client(self._client_config)
        try:
            await self._all(
                [
                    self._loop.create_task(self._run_client(index, client, commands))
                    for index, commands in enumerate(workloads)
                ]
            )
            self._heal()
            await self._retry_after_heal()
            hashes = await self._converge()
        finally:
            for each in self._clients:
                await each.close()
            await cancel_and_wait(self._tasks)
        violations = list(self._violations)
        # Logs here are short: the core's full invariants after every entry.
        report = check_history(
            self._observations,
            self._log.entries,
            hashes,
            ledger_config=SIM_LEDGER,
            full_invariants_every=1,
            verifier=self._signer,
        )
        skipped = skipped_seqs(self._log.entries, verifier=self._signer)
        violations.extend(report.violations)
        return SimResult(
            seed=self._seed,
            violations=tuple(violations),
            log_entries=len(self._log.entries),
            void_entries=len(skipped["void"]),
            quarantined_entries=len(skipped["quarantined"]),
            outcomes_heard=len(self._observations),
            gave_up=self._gave_up_under_faults,
            commands_sent=sum(client.attempts for client in self._clients),
            requests_sent=sum(client.requests for client in self._clients),
            lease_grants=self._lease.grants,
            crashes=self._crashes,
            faults=tuple(plan.describe()),
            virtual_ms=self._loop.now_ms(),
            fingerprint=self._fingerprint(),
            trace=tuple(self._timeline),
        )

    async def _retry_after_heal(self) -> None:
        """With faults over, every command must get an answer: the ones given
        up on (did they land?) and a few answered ones (same answer again?)."""
        again = list(self._gave_up)
        self._gave_up_under_faults = len(again)
        self._gave_up.clear()
        answered = list(self._answered)
        again.extend(self._workload_rng.sample(answered, min(3, len(answered))))
        patient = replace(self._client_config, deadline_ms=self._options.timing.settle_timeout_ms)
        client = self._client(patient)
        per_client: list[list[core.AnyCommand]] = [[] for _ in range(self._options.clients)]
        for index, command in again:
            per_client[index].append(command)

        async def resubmit(index: int, commands: list[core.AnyCommand]) -> None:
            for command in commands:
                if not await self._submit(index, client, command):
                    self._violations.append(
                        Violation("liveness", f"{command.request_id}: no answer after the heal")
                    )

        await self._all(
            [
                self._loop.create_task(resubmit(index, commands))
                for index, commands in enumerate(per_client)
            ]
        )

    async def _converge(self) -> dict[str, str]:
        """Wait until every replica has applied the whole log with nothing in
        flight and no market result half-settled (its leader appends the next
        slice on its own, after the log looked finished) and one of them
        leads; return their state hashes plus that of a brand-new replica
        restored from the newest snapshot and the log."""
        timing = self._options.timing
        deadline_ms = self._loop.now_ms() + timing.settle_timeout_ms
        while True:
            last_seq = self._log.last_seq()
            statuses = [node.replica.status() for node in self._nodes.values()]
            leaders = [s for s in statuses if s.role == "leader"]
            if len(leaders) == 1 and all(
                s.role in ("leader", "follower")
                and s.applied_seq == last_seq
                and s.pending_batches == 0
                and s.results_in_progress == 0
                for s in statuses
            ):
                break
            if self._loop.now_ms() >= deadline_ms:
                self._violations.append(
                    Violation("liveness", f"no convergence at log {last_seq}: {statuses}")
                )
                return {}
            await asyncio.sleep(0.1)
        hashes: dict[str, str] = {}
        for name, node in self._nodes.items():
            replica_hash = node.replica.state_hash()
            if replica_hash is not None:
                hashes[name] = replica_hash
        hashes["restored"] = await self._restored_hash(last_seq)
        return hashes

    async def _restored_hash(self, last_seq: int) -> str:
        host = Host("restorer", 1)
        timeout_ms = self._options.timing.cluster_request_timeout_ms
        snapshots = SimSnapshotStore(
            self._snapshots, self._network, host, request_timeout_ms=timeout_ms
        )
        replay, _ = await restore(snapshots, SIM_LEDGER, verifier=self._signer)
        follower = Follower(
            log=SimLog(
                self._log,
                self._network,
                host,
                now_ms=self._loop.now_ms,
                request_timeout_ms=timeout_ms,
            ),
            snapshots=snapshots,
            clock=SimClock(self._loop, host),
            replay=replay,
            config=FollowerConfig(snapshot_every_entries=10**9),
        )
        await follower.catch_up(last_seq)
        return core.state_hash(follower.state)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for entry in self._log.entries:
            digest.update(f"{entry.seq}|{entry.batch_id}|".encode())
            digest.update(hashlib.sha256(entry.payload).digest())
        for observation in self._observations:
            digest.update(observation.request_id.encode())
            digest.update(bytes.fromhex(observation.reply_hex))
        digest.update(str(self._loop.now_ns).encode())
        return digest.hexdigest()
