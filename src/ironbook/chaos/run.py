"""One chaos run: a real local cluster, the workload, a seeded fault schedule,
a full heal, and the checker's verdict.

    report = await run_chaos(ChaosOptions(duration_s=120, seed=1, data_dir=path))

The schedule injects every requested fault kind once (in a seeded order),
then seeded picks until the duration is used up, with a quiet gap before
each fault and every fault healed before the next. At the end the workload
stops, everything is restarted and healed, the replicas converge, and the
whole log is judged against the recorded history.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.netns import NamespaceNetwork, NetnsError, unavailable_reason
from ironbook.chaos.check import CheckReport
from ironbook.chaos.faults import (
    ALL_FAULTS,
    NETWORK_FAULTS,
    FaultError,
    FaultInjector,
    FaultKind,
    FaultRecord,
)
from ironbook.chaos.history import HistoryRecorder, Operation
from ironbook.chaos.http_clients import (
    GENEROUS_LIMITS,
    HTTP_CLIENT_PREFIX,
    HttpClients,
    ready,
)
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.projection import projection_path
from ironbook.chaos.workload import Workload, WorkloadConfig
from ironbook.client import ClientConfig, connect_ledger
from ironbook.services.gateway.auth import load_or_create_secret, local_secret_file
from ironbook.services.heartbeat_watch import HeartbeatWatch
from ironbook.services.local_cluster import ClusterConfig, GatewayOptions, LocalCluster

HISTORY_FILE = "history.jsonl"
REPORT_FILE = "chaos-report.json"
MUTATION_ENV = "IRONBOOK_REPLICA_TEST_MUTATION"
"""The replicas' `replica.test_mutation` setting: a TEST-ONLY bug for the checker to catch."""

FAULT_BUDGET_S = 15.0
"""Time one fault needs from injection to healed; none starts with less left."""
GATEWAY_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    data_dir: Path
    duration_s: float = 60.0
    seed: int = 1
    faults: Sequence[FaultKind] = ALL_FAULTS
    clients: int = 16
    http_clients: int = 2
    """Clients going through the HTTP gateway; only when `gateway_kill` is asked for."""
    quiet_s: tuple[float, float] = (2.0, 4.0)
    """A seeded pause, between these bounds, before each fault."""
    client_deadline_ms: int = 30_000
    """How long a client retries one command before giving up (`info`)."""


class ChaosReport(msgspec.Struct):
    verdict: str
    seed: int
    duration_s: float
    ops: int
    ok: int
    fail: int
    info: int
    reads: int
    info_applied: int
    info_absent: int
    lost: int
    duplicated: int
    conserved: bool
    no_negative_balance: bool
    replicas_agree: bool
    reads_consistent: bool
    faults: dict[str, int]
    fault_log: list[FaultRecord]
    log_entries: int
    history: str
    data_dir: str
    violations: list[dict[str, object]]
    mutation: str = ""
    errors: list[str] = msgspec.field(default_factory=list)
    """Faults the cluster did not recover from in time (a failing verdict)."""
    skipped: dict[str, str] = msgspec.field(default_factory=dict)
    """Fault kinds asked for but not injected here, and why (no namespaces)."""
    network: str = ""
    """The namespace layout the nodes ran in (empty: loopback)."""
    http_ops: int = 0
    """Operations sent through the HTTP gateway (with `gateway_kill`)."""
    projection_agrees: bool | None = None
    """The gateway's history projection equals a fold of the log (None: no
    projection in this run, i.e. no gateway)."""
    loop_block_ms: dict[str, int] = msgspec.field(default_factory=dict)
    """The longest time any replica's event loop was held by one piece of
    work, per kind, over the run (from the replicas' heartbeats)."""


class _Schedule:
    """Every kind once in a seeded order, then seeded picks."""

    def __init__(self, rng: random.Random, kinds: Sequence[FaultKind]) -> None:
        self._rng = rng
        self._kinds = list(kinds)
        self.first_round = list(kinds)
        rng.shuffle(self.first_round)

    def next_kind(self) -> FaultKind:
        if self.first_round:
            return self.first_round.pop(0)
        return self._rng.choice(self._kinds)


async def run_chaos(
    options: ChaosOptions, say: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    data_dir = options.data_dir.resolve()
    history_path = data_dir / HISTORY_FILE
    if history_path.exists():
        raise FileExistsError(f"{history_path} exists: a chaos run needs a fresh --data-dir")
    network, skipped = _network_for(options.faults, say)
    ports = PortLease()
    try:
        gateway = None
        if "gateway_kill" in options.faults:
            gateway = GatewayOptions(port=ports.take(1)[0], workers=2, env=GENEROUS_LIMITS)
        cluster = LocalCluster(data_dir, network=network, gateway=gateway)
        try:
            say(f"starting the cluster in {data_dir}")
            await asyncio.to_thread(cluster.start, 120_000)
            await cluster.wait_leaders(timeout_ms=120_000)
            report = await _run(cluster, options, history_path, say, skipped)
        finally:
            # Not in a thread: this must also run while a KeyboardInterrupt unwinds.
            say("stopping the cluster")
            cluster.stop()
    finally:
        ports.release()
        if network is not None:
            say("removing the network namespaces")
            network.destroy()
    if network is not None:
        layout = network.layout
        report.network = (
            f"{layout.nodes} namespaces {layout.prefix}n1..n{layout.nodes} on bridge "
            f"{layout.bridge} {layout.subnet} (latency by {network.latency_method})"
        )
    return report


def _network_for(
    kinds: Sequence[FaultKind], say: Callable[[str], None]
) -> tuple[NamespaceNetwork | None, dict[str, str]]:
    """Namespaces for the nodes if a network fault is asked for and they can
    be made here; else the network kinds to skip, with the reason."""
    wanted = sorted({kind for kind in kinds if kind in NETWORK_FAULTS})
    if not wanted:
        return None, {}
    reason = unavailable_reason()
    if reason is None:
        try:
            network = NamespaceNetwork.create(ClusterConfig().nats_nodes)
        except NetnsError as error:
            reason = f"could not make the network namespaces: {error}"
        else:
            say(f"nodes in network namespaces {network.layout.prefix}n* ({network.layout.subnet})")
            return network, {}
    for kind in wanted:
        say(f"skipping {kind}: {reason}")
    return None, dict.fromkeys(wanted, reason)


async def _run(
    cluster: LocalCluster,
    options: ChaosOptions,
    history_path: Path,
    say: Callable[[str], None],
    skipped: dict[str, str],
) -> ChaosReport:
    rng = random.Random(options.seed)
    injector = FaultInjector(cluster, random.Random(rng.random()))
    errors: list[str] = []
    recorder = HistoryRecorder(history_path)
    heartbeats = HeartbeatWatch(cluster.nats_url)
    client = await connect_ledger(
        cluster.nats_url,
        partitions=cluster.partitions,
        config=ClientConfig(
            request_timeout_ms=1_000,
            deadline_ms=options.client_deadline_ms,
            backoff_initial_ms=20,
            backoff_max_ms=500,
        ),
    )
    try:
        await heartbeats.start()
        workload = Workload(client, recorder, WorkloadConfig(seed=options.seed))
        await workload.setup()
        try:
            http = await _http_clients(cluster, workload, recorder, options)
        except FaultError as error:
            errors.append(str(error))
            say(f"error: {error}")
            http = None
        say(
            f"workload: {options.clients} clients"
            + (f" and {options.http_clients} over HTTP ({cluster.http_url})" if http else "")
            + f" for {options.duration_s:.0f} s"
        )
        started = time.monotonic()
        load = asyncio.gather(
            workload.run(options.duration_s + 3_600, options.clients),
            *([http.run(options.duration_s + 3_600, options.http_clients)] if http else []),
        )
        try:
            try:
                for kind in options.faults:
                    reason = skipped.get(kind) or injector.unavailable(kind)
                    if reason is not None and kind not in skipped:
                        skipped[kind] = reason
                        say(f"skipping {kind}: {reason}")
                kinds = [kind for kind in options.faults if kind not in skipped]
                await _inject_faults(injector, kinds, options, rng, started, say)
            except FaultError as error:
                # Not healing is a failure too, but the history is still checked.
                errors.append(str(error))
                say(f"error: {error}")
            remaining_s = options.duration_s - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, remaining_s))
        finally:
            workload.stop()
            if http is not None:
                http.stop()
            with contextlib.suppress(Exception):
                await load
        say("healing everything")
        try:
            await injector.heal_all()
        except FaultError as error:
            errors.append(str(error))
            say(f"error: {error}")
    finally:
        await client.close()
        await heartbeats.stop()
        recorder.close()
    say("waiting for the replicas to converge, then checking")
    report = await check_cluster(
        cluster.nats_url,
        recorder.operations,
        cluster.replica_ids(0),
        projection_db=projection_path(cluster.data_dir) if cluster.gateway else None,
        say=say,
    )
    faults = Counter(record.kind for record in injector.records)
    return ChaosReport(
        verdict="fail" if errors else report.verdict,
        seed=options.seed,
        duration_s=round(options.duration_s, 1),
        ops=report.ops,
        ok=report.ok,
        fail=report.fail,
        info=report.info,
        reads=report.reads,
        info_applied=report.info_applied,
        info_absent=report.info_absent,
        lost=report.lost,
        duplicated=report.duplicated,
        conserved=report.conserved,
        no_negative_balance=report.no_negative_balance,
        replicas_agree=report.replicas_agree,
        reads_consistent=report.reads_consistent,
        faults=dict(sorted(faults.items())),
        fault_log=injector.records,
        log_entries=report.log_entries,
        history=str(history_path),
        data_dir=str(cluster.data_dir),
        violations=[msgspec.to_builtins(v) for v in report.violations],
        mutation=os.environ.get(MUTATION_ENV, ""),
        errors=errors,
        skipped=skipped,
        projection_agrees=report.projection_agrees,
        http_ops=sum(op.client.startswith(HTTP_CLIENT_PREFIX) for op in recorder.operations),
        loop_block_ms=heartbeats.longest_block_ms(),
    )


async def _http_clients(
    cluster: LocalCluster, workload: Workload, recorder: HistoryRecorder, options: ChaosOptions
) -> HttpClients | None:
    """The HTTP share of the workload, once every gateway worker is ready."""
    if cluster.http_url is None or options.http_clients < 1:
        return None
    url = cluster.http_url
    deadline = time.monotonic() + GATEWAY_READY_TIMEOUT_S
    while not await asyncio.to_thread(ready, url):
        if time.monotonic() > deadline:
            raise FaultError(f"the gateway at {url} was not ready in {GATEWAY_READY_TIMEOUT_S} s")
        await asyncio.sleep(0.2)
    secret = load_or_create_secret(local_secret_file(cluster.data_dir))
    return HttpClients(
        url,
        secret,
        workload,
        recorder,
        deadline_ms=options.client_deadline_ms,
        seed=options.seed,
    )


async def _inject_faults(
    injector: FaultInjector,
    kinds: Sequence[FaultKind],
    options: ChaosOptions,
    rng: random.Random,
    started: float,
    say: Callable[[str], None],
) -> None:
    if not kinds:
        return
    schedule = _Schedule(rng, kinds)
    while True:
        quiet_s = rng.uniform(*options.quiet_s)
        # Every requested kind is injected once, even if that runs past the duration.
        out_of_time = time.monotonic() - started + quiet_s + FAULT_BUDGET_S > options.duration_s
        if out_of_time and not schedule.first_round:
            return
        await asyncio.sleep(quiet_s)
        kind = schedule.next_kind()
        record = await injector.inject(kind)
        say(f"{time.monotonic() - started:6.1f} s  {kind} {record.target}: {record.detail}")


async def check_cluster(
    nats_url: str,
    operations: Sequence[Operation],
    replicas: Sequence[str],
    projection_db: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> CheckReport:
    """Judge `operations` against partition 0's whole log and every replica's
    converged state hash (see `chaos.partitions.check_all_partitions`)."""
    return await check_all_partitions(
        nats_url,
        operations,
        {0: replicas},
        projection_dbs={0: projection_db} if projection_db is not None else None,
        say=say,
    )
