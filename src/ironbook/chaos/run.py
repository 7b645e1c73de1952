"""One chaos run: a real local cluster, the workload, a seeded fault schedule,
a full heal, and the checker's verdict.

    report = await run_chaos(ChaosOptions(duration_s=120, seed=1, data_dir=path))

Before the start, the machine is surveyed for leftovers of earlier runs
(`chaos.environment`); with `strict_env` any leftover refuses the run. The
schedule injects every requested fault kind once (in a seeded order), then
seeded picks until the duration is used up, with a quiet gap before each
fault and every fault healed before the next. The load and the fault
schedule run in one task group: a workload client that raises stops the
run, and the error is named in the report (a failing verdict). At the end
the workload stops, everything is restarted and healed, the replicas
converge, and the whole log is judged against the recorded history; then
the audit trail: every log must verify and every leader heard over the run
must be in the significant-event log (`chaos.audit`).

A failing run (a violation, a fault that did not heal, a crashed load or a
crash of the run itself) explains itself: `failure.md` in the data directory
and the evidence copied to `keep_dir/<seed>-<UTC time>/` (`chaos.evidence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ironbook.adapters.nats.localproc import PortLease
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.adapters.netns import NamespaceNetwork, NetnsError, unavailable_reason
from ironbook.adapters.prometheus import wait_targets_up
from ironbook.chaos.alerts import FaultAlerts, judge_alerts
from ironbook.chaos.audit import AuditCheck, audit_line, check_audit
from ironbook.chaos.environment import Environment, UncleanEnvironment, survey_environment
from ironbook.chaos.evidence import (
    DEFAULT_KEEP_ROOT,
    Failure,
    causes,
    evidence_path,
    keep_evidence,
)
from ironbook.chaos.faults import (
    ALL_FAULTS,
    NETWORK_FAULTS,
    FaultError,
    FaultInjector,
    FaultKind,
    FaultRecord,
)
from ironbook.chaos.history import HISTORY_FILE, HistoryRecorder
from ironbook.chaos.http_clients import (
    GENEROUS_LIMITS,
    HTTP_CLIENT_PREFIX,
    HttpClients,
    ready,
)
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.projection import projection_path
from ironbook.chaos.workload import Workload, WorkloadConfig, connect_workload_client
from ironbook.chaos.write_gaps import GapStats, gaps_by_kind
from ironbook.client import LedgerClient
from ironbook.replication.checker import CheckReport
from ironbook.replication.history import Operation
from ironbook.services.gateway.auth import local_signing_key
from ironbook.services.heartbeat_watch import HeartbeatWatch
from ironbook.services.local_cluster import ClusterConfig, GatewayOptions, LocalCluster
from ironbook.services.maintenance import RollingWhat
from ironbook.services.ops.alerts import AlertRecord, describe, read_records
from ironbook.settings import MonitoringSettings, ReplicaMutation

REPORT_FILE = "chaos-report.json"
"""The replicas' `replica.test_mutation` setting: a TEST-ONLY bug for the checker to catch."""

FAULT_BUDGET_S = 15.0
"""Time one fault needs from injection to healed; none starts with less left."""
GATEWAY_READY_TIMEOUT_S = 120.0
ALERTS_RESOLVE_TIMEOUT_S = 90.0
TARGETS_UP_TIMEOUT_S = 150.0
"""With `--monitoring`: how long every Prometheus target may take to come up."""
TARGETS_SETTLE_S = 5.0
"""... and how long they must all stay up before the first fault."""


WorkloadFactory = Callable[[LedgerClient, HistoryRecorder, WorkloadConfig], Workload]


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    data_dir: Path
    duration_s: float = 60.0
    seed: int = 1
    faults: Sequence[FaultKind] = ALL_FAULTS
    clients: int = 16
    http_clients: int = 2
    """Clients going through the HTTP gateway; only when `gateway_kill` or
    `rolling_restart` is asked for."""
    quiet_s: tuple[float, float] = (2.0, 4.0)
    """A seeded pause, between these bounds, before each fault."""
    client_deadline_ms: int = 30_000
    """How long a client retries one command before giving up (`info`)."""
    keep_dir: Path = DEFAULT_KEEP_ROOT
    """A failing run copies its evidence to `keep_dir/<seed>-<UTC time>/`."""
    strict_env: bool = False
    """Refuse to start (`UncleanEnvironment`) if the machine holds leftovers."""
    rolling_what: RollingWhat = "all"
    """What the `rolling_restart` fault restarts."""
    workload: WorkloadFactory = field(default=Workload)
    """Builds the workload on the run's client (a test seam: a workload
    whose client raises must fail the run)."""
    test_mutation: ReplicaMutation = "none"
    """TEST-ONLY: the replicas' `replica.test_mutation` setting, so that a run
    shows the checker catching what the mutation breaks."""
    monitoring: bool = False
    """Run the monitoring stack and judge its alerts against the faults."""

    def command(self) -> str:
        """The `ironbook chaos` command line that reruns this seed."""
        parts = [
            "ironbook chaos",
            f"--seed {self.seed}",
            f"--duration {self.duration_s:g}",
            f"--faults {','.join(self.faults) or 'none'}",
            f"--clients {self.clients}",
            f"--http-clients {self.http_clients}",
        ]
        if self.test_mutation != "none":
            parts.append(f"--test-mutation {self.test_mutation}")
        if self.monitoring:
            parts.append("--monitoring")
        return " ".join(parts)


class ChaosReport(msgspec.Struct):
    verdict: str
    """pass only if the checker passed and the run itself had no error."""
    seed: int
    duration_s: float
    check: CheckReport | None
    """The history checker's report (None: the run crashed before the check)."""
    faults: dict[str, int]
    fault_log: list[FaultRecord]
    history: str
    data_dir: str
    environment: Environment
    """What was on the machine before the start (leftovers, CPU use)."""
    evidence_dir: str | None = None
    """Where a failing run's evidence was copied (None on a pass)."""
    command: str = ""
    """The command line that reruns this seed."""
    mutation: str = ""
    errors: list[str] = msgspec.field(default_factory=list)
    """Failures of the run itself: faults the cluster did not recover from
    in time, a workload or load-generator error, a crash (a failing verdict)."""
    skipped: dict[str, str] = msgspec.field(default_factory=dict)
    """Fault kinds asked for but not injected here, and why (no namespaces)."""
    network: str = ""
    """The namespace layout the nodes ran in (empty: loopback)."""
    http_ops: int = 0
    """Operations sent through the HTTP gateway (with `gateway_kill`)."""
    loop_block_ms: dict[str, int] = msgspec.field(default_factory=dict)
    """The longest time any replica's event loop was held by one piece of
    work, per kind, over the run (from the replicas' heartbeats)."""
    write_gap_ms: dict[str, GapStats] = msgspec.field(default_factory=dict)
    """Per fault kind injected: the longest stretch without an acknowledged
    write while one of its faults was under way (injected to healed), the
    max and the median over its faults (`chaos.write_gaps`)."""
    alerts: dict[str, FaultAlerts] | None = None
    """With `--monitoring`: per fault kind, injections, detections by an
    alert, median seconds to fire and to resolve (chaos/alerts.py)."""
    false_alerts: int | None = None
    """With `--monitoring`: alerts that fired while no fault was in progress."""
    alert_log: list[str] = msgspec.field(default_factory=list)
    """With `--monitoring`: every notification the receiver got, in order."""
    audit: AuditCheck | None = None
    """`audit verify` of every log after the run, and every leader the run
    heard matched with its recorded election (`chaos.audit`; None: the run
    crashed before)."""


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
    environment = await survey_environment()
    if options.strict_env and environment.leftovers:
        raise UncleanEnvironment(environment)
    for line in environment.leftovers:
        say(f"environment: {line}")
    run = _Run(options, data_dir, say)
    try:
        await _run_on_a_cluster(run)
    except Exception as error:  # a crash of the run itself is a failing run, explained
        for cause in causes(error):
            run.fail(f"the run crashed: {cause}")
    finally:
        run.recorder.close()
    report = run.report(environment)
    if report.verdict != "pass":
        evidence_dir = evidence_path(options.keep_dir, options.seed)
        report.evidence_dir = str(evidence_dir)
        try:
            keep_evidence(run.failure(report), data_dir, evidence_dir)
        except OSError as error:
            report.evidence_dir = None
            report.errors.append(f"the evidence could not be kept in {evidence_dir}: {error}")
            say(f"error: {report.errors[-1]}")
        else:
            say(f"evidence kept in {evidence_dir}")
    return report


@dataclass(slots=True)
class _Run:
    """One run's state, as far as it got."""

    options: ChaosOptions
    data_dir: Path
    say: Callable[[str], None]
    recorder: HistoryRecorder = field(init=False)
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    fault_log: list[FaultRecord] = field(default_factory=list)
    network: str = ""
    check: CheckReport | None = None
    loop_block_ms: dict[str, int] = field(default_factory=dict)
    alert_records: list[AlertRecord] | None = None
    audit: AuditCheck | None = None

    def __post_init__(self) -> None:
        self.recorder = HistoryRecorder(self.data_dir / HISTORY_FILE)

    def fail(self, error: str) -> None:
        self.errors.append(error)
        self.say(f"error: {error}")

    def report(self, environment: Environment) -> ChaosReport:
        passed = (
            self.check is not None
            and self.check.verdict == "pass"
            and self.audit is not None
            and self.audit.verdict == "pass"
            and not self.errors
        )
        operations = self.recorder.operations
        verdict = (
            None if self.alert_records is None else judge_alerts(self.fault_log, self.alert_records)
        )
        return ChaosReport(
            verdict="pass" if passed else "fail",
            seed=self.options.seed,
            duration_s=round(self.options.duration_s, 1),
            check=self.check,
            faults=dict(sorted(Counter(record.kind for record in self.fault_log).items())),
            fault_log=self.fault_log,
            history=str(self.data_dir / HISTORY_FILE),
            data_dir=str(self.data_dir),
            environment=environment,
            command=self.options.command(),
            mutation="" if self.options.test_mutation == "none" else self.options.test_mutation,
            errors=self.errors,
            skipped=self.skipped,
            network=self.network,
            http_ops=sum(op.client.startswith(HTTP_CLIENT_PREFIX) for op in operations),
            loop_block_ms=self.loop_block_ms,
            write_gap_ms=gaps_by_kind(
                [(r.kind, r.injected_wall_ms, r.healed_wall_ms) for r in self.fault_log],
                operations,
            ),
            alerts=None if verdict is None else verdict.alerts,
            false_alerts=None if verdict is None else verdict.false_alerts,
            alert_log=[describe(record) for record in self.alert_records or []],
            audit=self.audit,
        )

    def failure(self, report: ChaosReport) -> Failure:
        return Failure.of(report, self.recorder.operations, REPORT_FILE)


def _mutation_settings(data_dir: Path, mutation: ReplicaMutation) -> Path | None:
    """A settings file giving every process the test mutation, if any."""
    if mutation == "none":
        return None
    path = data_dir / "chaos-settings.toml"
    path.write_text(f'[replica]\ntest_mutation = "{mutation}"\n')
    return path


async def _run_on_a_cluster(run: _Run) -> None:
    options, say = run.options, run.say
    network, run.skipped = _network_for(options.faults, say)
    ports = PortLease()
    try:
        gateway = None
        if {"gateway_kill", "rolling_restart"} & set(options.faults):
            gateway = GatewayOptions(port=ports.take(1)[0], workers=2, env=GENEROUS_LIMITS)
        cluster = LocalCluster(
            run.data_dir,
            network=network,
            gateway=gateway,
            config_file=_mutation_settings(run.data_dir, options.test_mutation),
            monitoring=MonitoringSettings(enabled=True) if options.monitoring else None,
        )
        try:
            say(f"starting the cluster in {run.data_dir}")
            await asyncio.to_thread(cluster.start, 120_000)
            await cluster.wait_leaders(timeout_ms=120_000)
            async with contextlib.AsyncExitStack() as served:
                metrics = await cluster.serve_supervisor_metrics()
                if metrics is not None:
                    await served.enter_async_context(metrics)
                if cluster.monitoring is not None:
                    # No fault before every target has been scraped a few
                    # times: an alert on a change needs a sample from before it.
                    say("waiting for every Prometheus target to be up")
                    await asyncio.to_thread(
                        wait_targets_up,
                        cluster.monitoring.prometheus_url,
                        set(),
                        timeout_s=TARGETS_UP_TIMEOUT_S,
                        settle_s=TARGETS_SETTLE_S,
                    )
                await _run(cluster, run)
                if cluster.monitoring is not None:
                    say("waiting for the alerts to resolve")
                    run.alert_records = await _alerts_once_resolved(
                        cluster.monitoring.dir / "alerts.jsonl"
                    )
        finally:
            # Not in a thread: this must also run while a KeyboardInterrupt unwinds.
            say("stopping the cluster")
            cluster.stop()
    finally:
        ports.release()
        if network is not None:
            say("removing the network namespaces")
            network.destroy()
            layout = network.layout
            run.network = (
                f"{layout.nodes} namespaces {layout.prefix}n1..n{layout.nodes} on bridge "
                f"{layout.bridge} {layout.subnet} (latency by {network.latency_method})"
            )


async def _alerts_once_resolved(path: Path) -> list[AlertRecord]:
    """The receiver's records once no alert is firing (bounded: an alert
    still firing then is reported as never resolved)."""
    deadline = time.monotonic() + ALERTS_RESOLVE_TIMEOUT_S
    while True:
        records = read_records(path)
        firing: set[str] = set()
        for record in records:
            (firing.add if record.status == "firing" else firing.discard)(record.fingerprint)
        if not firing or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1)


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


async def _run(cluster: LocalCluster, run: _Run) -> None:
    options, say = run.options, run.say
    rng = random.Random(options.seed)
    injector = FaultInjector(
        cluster, random.Random(rng.random()), rolling_what=options.rolling_what
    )
    run.fault_log = injector.records
    heartbeats = HeartbeatWatch(cluster.ops)
    client = await connect_workload_client(
        cluster.ops, cluster.partitions, deadline_ms=options.client_deadline_ms, actor="chaos"
    )
    try:
        await heartbeats.start()
        workload = options.workload(client, run.recorder, WorkloadConfig(seed=options.seed))
        await workload.setup()
        try:
            http = await _http_clients(cluster, workload, run.recorder, options)
        except FaultError as error:
            run.fail(str(error))
            http = None
        say(
            f"workload: {options.clients} clients"
            + (f" and {options.http_clients} over HTTP ({cluster.http_url})" if http else "")
            + f" for {options.duration_s:.0f} s"
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(workload.run(options.duration_s + 3_600, options.clients))
                if http is not None:
                    group.create_task(http.run(options.duration_s + 3_600, options.http_clients))
                group.create_task(_faults_then_stop(injector, rng, run, workload, http))
        except* Exception as group_error:
            # The load failed: the fault schedule was cancelled with it; the
            # heal below undoes a fault left half way, and the history so
            # far is still checked.
            for cause in causes(group_error):
                run.fail(f"the load failed: {cause}")
        say("healing everything")
        try:
            await injector.heal_all()
        except FaultError as error:
            run.fail(str(error))
    finally:
        await client.close()
        await heartbeats.stop()
        run.loop_block_ms = heartbeats.longest_block_ms()
    say("waiting for the replicas to converge, then checking")
    run.check = await check_cluster(
        cluster.ops,
        cluster.data_dir,
        run.recorder.operations,
        cluster.replica_ids(0),
        projection_db=projection_path(cluster.data_dir) if cluster.gateway else None,
        say=say,
    )
    say("verifying the audit trail")
    run.audit = await check_audit(
        cluster.ops,
        cluster.data_dir,
        cluster.partitions,
        {p: heartbeats.leader_terms(p) for p in range(cluster.partitions)},
        say,
    )
    if run.audit.verdict != "pass":
        run.fail(audit_line(run.audit))


async def _faults_then_stop(
    injector: FaultInjector,
    rng: random.Random,
    run: _Run,
    workload: Workload,
    http: HttpClients | None,
) -> None:
    """The fault schedule for the run's duration, then stop the load."""
    options, say = run.options, run.say
    started = time.monotonic()
    try:
        for kind in options.faults:
            reason = run.skipped.get(kind) or injector.unavailable(kind)
            if reason is not None and kind not in run.skipped:
                run.skipped[kind] = reason
                say(f"skipping {kind}: {reason}")
        kinds = [kind for kind in options.faults if kind not in run.skipped]
        try:
            await _inject_faults(injector, kinds, options, rng, started, say)
        except FaultError as error:
            # Not healing is a failure too, but the history is still checked.
            run.fail(str(error))
        remaining_s = options.duration_s - (time.monotonic() - started)
        await asyncio.sleep(max(0.0, remaining_s))
    finally:
        workload.stop()
        if http is not None:
            http.stop()


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
    secret = local_signing_key(cluster.data_dir)
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
    endpoint: NatsEndpoint,
    data_dir: Path,
    operations: Sequence[Operation],
    replicas: Sequence[str],
    projection_db: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> CheckReport:
    """Judge `operations` against partition 0's whole log and every replica's
    converged state hash (see `chaos.partitions.check_all_partitions`)."""
    return await check_all_partitions(
        endpoint,
        operations,
        {0: replicas},
        data_dir=data_dir,
        projection_dbs={0: projection_db} if projection_db is not None else None,
        say=say,
    )
