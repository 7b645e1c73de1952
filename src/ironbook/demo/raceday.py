"""The big race day: a real local cluster, a steady afternoon of betting, a
surge to the off of the big race with faults injected at the peak, the race
closed and settled, everything healed, and the history checker's verdict on
every operation and every replica.

    result = await run_race_day(RaceDayOptions(data_dir=path), live)

`live` (a `LiveState`) is what the dashboard draws; the returned
`RaceDayResult` is what the report is written from. The traffic, the
sampler and the script of the day run in one task group: a load generator
that raises ends the traffic, and the error is named in the result (a
failing verdict). A failing day, or one that crashed, explains itself
(`chaos.evidence`): `failure.md` in the data directory and the evidence
copied to `keep_dir/<seed>-<UTC time>/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ironbook import core
from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.netns import NamespaceNetwork, NetnsError, unavailable_reason
from ironbook.chaos.alerts import attribute_alerts
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
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.workload import SELECTIONS, WorkloadConfig
from ironbook.client import ClientConfig, LedgerClient, connect_ledger
from ironbook.core.events import SettlementReply
from ironbook.demo.cluster_view import ClusterView, ClusterWatcher
from ironbook.demo.timeline import (
    AlertMark,
    FaultMark,
    PhaseMark,
    SecondCounter,
    Timeline,
    longest_stall_ms,
)
from ironbook.demo.traffic import BIG_RACE_NAME, RUNNERS, RaceDayWorkload
from ironbook.replication.checker import CheckReport
from ironbook.replication.concurrency import wait_for
from ironbook.replication.history import Operation
from ironbook.services.feed.processes import FeedOptions
from ironbook.services.local_cluster import ClusterConfig, LocalCluster
from ironbook.services.ops.alerts import (
    AlertRecord,
    alert_spans,
    alert_target,
    describe,
    read_records,
)
from ironbook.services.supervisor import Supervisor
from ironbook.settings import MonitoringSettings

REPORT_FILE = "report.json"
"""The result's JSON, as a failing day keeps it with its evidence."""
START_TIMEOUT_MS = 120_000
UNDERCARD_EVERY_S = 3.0
"""An undercard race opens, and the one before closes and settles, this often
(the workload's settler sleeps this long: the end of the traffic waits for it)."""
FEED_CHECK_INTERVAL_S = 0.5
STOP_TIMEOUT_MS = 5_000
"""A process still running this long after SIGTERM is killed: the run is over
and judged, and kill -9 is a fault the ledger is built to take."""
FAULT_GAP_S = 1.5
"""Quiet time between two faults (each is healed before the next)."""


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """A fault of the first available kind in `kinds`, aimed at `partition`."""

    label: str
    kinds: tuple[str, ...]
    partition: int


DEFAULT_FAULTS = (
    PlannedFault("ledger leader kill -9", ("leader_kill",), 0),
    PlannedFault("NATS node kill -9 (the stream leader)", ("nats_leader_kill",), 1),
    PlannedFault(
        "a node cut off by a network partition",
        ("partition", "leader_pause"),
        0,
    ),
)
QUICK_FAULTS = DEFAULT_FAULTS[:2]


@dataclass(frozen=True, slots=True)
class RaceDayOptions:
    data_dir: Path
    seconds: float = 100.0
    """Seconds of traffic: the steady phase, then the surge to the off."""
    seed: int = 2026
    partitions: int = 2
    steady_clients: int = 6
    peak_clients: int = 64
    accounts: int = 120
    faults: Sequence[PlannedFault] = DEFAULT_FAULTS
    steady_share: float = 0.25
    """Share of `seconds` before the surge starts."""
    ramp_s: float = 8.0
    """Seconds the surge takes to reach the peak; the faults start then."""
    feed: FeedOptions | None = field(default_factory=FeedOptions)
    """The simulated odds feed (provider, ingester, settlement processes)."""
    command: str = ""
    """The command line that repeats this day (written into a failure's evidence)."""
    keep_dir: Path = DEFAULT_KEEP_ROOT
    """A failing day copies its evidence to `keep_dir/<seed>-<UTC time>/`."""
    strict_env: bool = False
    """Refuse to start (`UncleanEnvironment`) if the machine holds leftovers."""
    monitoring: MonitoringSettings | None = None
    """Run the monitoring stack with the cluster; its alerts go in the report."""

    @property
    def steady_s(self) -> float:
        return self.seconds * self.steady_share


@dataclass(slots=True)
class LiveState:
    """Everything the dashboard draws, updated by the runner."""

    seed: int
    partitions: int
    phase: str = "starting the cluster"
    started_monotonic: float | None = None
    """When the traffic started (t = 0)."""
    started_wall_ms: int | None = None
    """The same moment by the wall clock (for alerts, which carry wall times)."""
    off_at_s: float | None = None
    clients: int = 0
    traffic: bool = False
    """True while clients are running (a status line each second)."""
    timeline: Timeline = field(default_factory=Timeline)
    fault_lines: list[str] = field(default_factory=list)
    """The fault timeline as it happens, one line per event."""
    fault_in_progress: str = ""
    view: ClusterView | None = None
    view_as_of_ms: int | None = None
    """Set when the cluster stops being watched: `view` is as of then."""
    totals: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    notes: list[str] = field(default_factory=list)

    def t_s(self) -> float:
        if self.started_monotonic is None:
            return 0.0
        return time.monotonic() - self.started_monotonic


class PhaseTiming(msgspec.Struct, frozen=True):
    name: str
    seconds: float


class RaceDayResult(msgspec.Struct):
    verdict: str
    """pass only if the checker passed and the day itself had no error."""
    seed: int
    seconds: float
    partitions: int
    peak_clients: int
    check: CheckReport | None
    """The history checker's report (None: the day crashed before the check)."""
    bets_ok: int
    peak_bets_per_s: int
    big_race: str
    """How the big race ended: the winner and what was paid, or why not."""
    feed: str
    """The odds feed that ran, or "off"."""
    notes: list[str]
    """How the cluster was laid out and which faults stood in for others."""
    phases: list[PhaseTiming]
    timeline: Timeline
    events: list[str]
    """The fault timeline as the dashboard showed it (faults, supervisor
    restarts, the off)."""
    errors: list[str]
    """Failures of the day itself: a fault that did not heal, a load
    generator that raised, a crash."""
    history: str
    """The history file, or "" if it was not kept."""
    data_dir: str
    command: str = ""
    """The command line that repeats this run."""
    fault_log: list[FaultRecord] = msgspec.field(default_factory=list)
    """Each fault as injected and healed (wall times)."""
    environment: Environment | None = None
    """What was on the machine before the start (leftovers, CPU use)."""
    evidence_dir: str | None = None
    """Where a failing day's evidence was copied (None on a pass)."""
    alerts: list[str] = msgspec.field(default_factory=list)
    """With monitoring: every alert notification the receiver got, in order."""


def available_kind(
    planned: PlannedFault, injector: FaultInjector
) -> tuple[FaultKind | None, list[str]]:
    """The first kind of `planned` that `injector` can inject into its
    cluster, and why each kind preferred to it cannot be."""
    notes: list[str] = []
    for name in planned.kinds:
        kind = next((known for known in ALL_FAULTS if known == name), None)
        if kind is None:
            notes.append(f"{name}: not available in this fault injector")
            continue
        reason = injector.unavailable(kind)
        if reason is None:
            return kind, notes
        notes.append(f"{name}: {reason}")
    return None, notes


def _wants_network(options: RaceDayOptions) -> bool:
    return any(kind in NETWORK_FAULTS for planned in options.faults for kind in planned.kinds)


def make_network(nodes: int) -> tuple[NamespaceNetwork | None, str]:
    """One network namespace per node (for the partition fault), or None and
    why they cannot be made here (not root, no `ip`...)."""
    reason = unavailable_reason()
    if reason is not None:
        return None, reason
    try:
        return NamespaceNetwork.create(nodes), ""
    except NetnsError as error:
        return None, f"could not make the network namespaces: {error}"


async def run_race_day(options: RaceDayOptions, live: LiveState) -> RaceDayResult:
    data_dir = options.data_dir.resolve()
    history_path = data_dir / HISTORY_FILE
    if history_path.exists():
        raise FileExistsError(f"{history_path} exists: the demo needs a fresh --data-dir")
    live.phase = "looking for leftovers of earlier runs"
    environment = await survey_environment()
    if options.strict_env and environment.leftovers:
        raise UncleanEnvironment(environment)
    day = _Day(options, data_dir, live)
    try:
        await _on_a_cluster(day)
    except Exception as error:  # a crash of the day itself is a failing day, explained
        day.errors.extend(f"the race day crashed: {cause}" for cause in causes(error))
    finally:
        day.recorder.close()
    result = day.result(environment)
    if result.verdict != "pass":
        evidence_dir = evidence_path(options.keep_dir, options.seed)
        result.evidence_dir = str(evidence_dir)
        try:
            keep_evidence(day.failure(result), data_dir, evidence_dir)
        except OSError as error:
            result.evidence_dir = None
            result.errors.append(f"the evidence could not be kept in {evidence_dir}: {error}")
    return result


@dataclass(slots=True)
class _Day:
    """One race day's state, as far as it got."""

    options: RaceDayOptions
    data_dir: Path
    live: LiveState
    recorder: HistoryRecorder = field(init=False)
    phases: list[PhaseTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fault_log: list[FaultRecord] = field(default_factory=list)
    big_race: str = "not run"
    check: CheckReport | None = None
    alerts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recorder = HistoryRecorder(self.data_dir / HISTORY_FILE)

    def result(self, environment: Environment) -> RaceDayResult:
        options, live = self.options, self.live
        samples = live.timeline.samples
        passed = self.check is not None and self.check.verdict == "pass" and not self.errors
        return RaceDayResult(
            verdict="pass" if passed else "fail",
            seed=options.seed,
            seconds=options.seconds,
            partitions=options.partitions,
            peak_clients=options.peak_clients,
            check=self.check,
            bets_ok=sum(s.bets_ok for s in samples),
            peak_bets_per_s=max((s.bets_ok for s in samples), default=0),
            big_race=self.big_race,
            feed=(
                f"simulated provider, {options.feed.rate} odds changes/s, ingested into every "
                "partition's log"
                if options.feed is not None
                else "off"
            ),
            notes=[note for note in live.notes if note not in live.timeline.skipped_faults],
            phases=self.phases,
            timeline=live.timeline,
            events=[line.strip() for line in live.fault_lines],
            errors=self.errors,
            history=str(self.recorder.path),
            data_dir=str(self.data_dir),
            command=options.command,
            fault_log=self.fault_log,
            environment=environment,
            alerts=self.alerts,
        )

    def failure(self, result: RaceDayResult) -> Failure:
        return Failure.of(result, self.recorder.operations, REPORT_FILE)


async def _on_a_cluster(day: _Day) -> None:
    options, live = day.options, day.live
    began = time.monotonic()
    network: NamespaceNetwork | None = None
    if _wants_network(options):
        network, why_not = await asyncio.to_thread(make_network, ClusterConfig().nats_nodes)
        if network is None:
            live.notes.append(f"nodes on loopback, no network partition: {why_not}")
        else:
            live.notes.append(
                f"each node in its own network namespace ({network.layout.prefix}n*, "
                f"{network.layout.subnet})"
            )
    try:
        cluster = LocalCluster(
            day.data_dir,
            partitions=options.partitions,
            network=network,
            feed=options.feed,
            monitoring=options.monitoring,
        )
        try:
            live.phase = "starting the cluster"
            await asyncio.to_thread(cluster.start, START_TIMEOUT_MS)
            await cluster.wait_leaders(timeout_ms=START_TIMEOUT_MS)
            day.phases.append(PhaseTiming("cluster start", round(time.monotonic() - began, 1)))
            if cluster.monitoring is not None:
                live.notes.append(f"ops console at {cluster.monitoring.console_url}")
            async with contextlib.AsyncExitStack() as served:
                metrics = await cluster.serve_supervisor_metrics()
                if metrics is not None:
                    await served.enter_async_context(metrics)
                await _race_day(cluster, day)
        finally:
            if cluster.monitoring is not None:
                records = read_records(cluster.monitoring.dir / "alerts.jsonl")
                day.alerts = [describe(record) for record in records]
                _alerts_on_the_timeline(day, records)
            # Not in a thread: this must also run while a KeyboardInterrupt unwinds.
            live.phase = "stopping the cluster"
            stopping = time.monotonic()
            cluster.stop(timeout_ms=STOP_TIMEOUT_MS)
            day.phases.append(PhaseTiming("cluster stop", round(time.monotonic() - stopping, 1)))
    finally:
        if network is not None:
            network.destroy()


async def _race_day(cluster: LocalCluster, day: _Day) -> None:
    options, live, recorder, phases = day.options, day.live, day.recorder, day.phases
    rng = random.Random(options.seed)
    nc = await cluster.ops.connect("ironbook-demo")
    watcher = ClusterWatcher(cluster, nc)
    await watcher.start()
    live.view = watcher.view
    client = await connect_ledger(
        cluster.ops,
        partitions=cluster.partitions,
        config=ClientConfig(
            request_timeout_ms=1_000, deadline_ms=30_000, backoff_initial_ms=20, backoff_max_ms=500
        ),
        issuer=core.acting("demo"),
    )
    workload = RaceDayWorkload(
        client,
        recorder,
        WorkloadConfig(
            accounts=options.accounts,
            opening_deposit_minor=1_000_000,
            settle_every_s=UNDERCARD_EVERY_S,
            seed=options.seed,
        ),
        active_clients=options.steady_clients,
    )
    feed_done = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_keep_feed_running(cluster, live, feed_done))
            group.create_task(watcher.watch(feed_done))
            try:
                await _day_then_heal(cluster, day, workload, client, rng)
            finally:
                feed_done.set()
        if cluster.feeds:
            # The feed appends to every log as long as it runs; the check
            # compares a still log with the replicas' hashes.
            live.phase = "stopping the odds feed"
            mark = time.monotonic()
            await asyncio.to_thread(_stop_all, list(cluster.feeds.values()))
            phases.append(PhaseTiming("feed stop", round(time.monotonic() - mark, 1)))
    finally:
        await client.close()
        recorder.close()
        await watcher.close()
        live.view_as_of_ms = time.time_ns() // 1_000_000
        await nc.close()
    mark = time.monotonic()
    live.phase = "checking the history against every replica"
    day.check = await check_partitions(cluster, recorder.operations)
    phases.append(PhaseTiming("check", round(time.monotonic() - mark, 1)))


async def _day_then_heal(
    cluster: LocalCluster,
    day: _Day,
    workload: RaceDayWorkload,
    client: LedgerClient,
    rng: random.Random,
) -> None:
    options, live, recorder, phases = day.options, day.live, day.recorder, day.phases
    mark = time.monotonic()
    live.phase = f"opening {options.accounts} accounts and the markets"
    await workload.setup()
    phases.append(PhaseTiming("accounts and markets", round(time.monotonic() - mark, 1)))
    started_wall_ms = time.time_ns() // 1_000_000
    live.started_monotonic = time.monotonic()
    live.started_wall_ms = started_wall_ms
    live.traffic = True
    live.off_at_s = options.seconds
    counter = SecondCounter(started_wall_ms)
    try:
        async with asyncio.TaskGroup() as group:
            sampler = group.create_task(_sample_every_second(live, counter, recorder, client))
            group.create_task(workload.run(options.seconds + 3_600, options.peak_clients))
            group.create_task(_direct_then_stop(cluster, day, workload, rng, sampler))
    except* Exception as group_error:
        # The load (or the day's script) failed: the rest was cancelled with
        # it; the heal below undoes a fault left half way, and the history
        # so far is still checked.
        day.errors.extend(f"the race day traffic failed: {c}" for c in causes(group_error))
    counter.take(recorder.operations)
    live.traffic = False
    phases.append(PhaseTiming("race day traffic", round(live.t_s(), 1)))
    mark = time.monotonic()
    live.phase = "healing everything"
    live.clients = 0
    try:
        await FaultInjector(cluster, rng).heal_all()
    except FaultError as error:
        day.errors.append(str(error))
    phases.append(PhaseTiming("heal", round(time.monotonic() - mark, 1)))


async def _direct_then_stop(
    cluster: LocalCluster,
    day: _Day,
    workload: RaceDayWorkload,
    rng: random.Random,
    sampler: asyncio.Task[None],
) -> None:
    """The day's script, then the traffic and the sampler stop."""
    try:
        day.big_race = await _direct(cluster, day, workload, rng)
    finally:
        workload.stop()
        sampler.cancel()


async def _keep_feed_running(cluster: LocalCluster, live: LiveState, done: asyncio.Event) -> None:
    """Restart a feed process that exits (with the supervisor's backoff)
    until `done`; each exit and restart goes to the fault timeline. The
    faults restart what they break themselves; the feed is not theirs."""
    # Its log lines would land in the middle of the dashboard; its events are
    # shown in the fault timeline instead.
    logging.getLogger("ironbook.supervisor").addHandler(logging.NullHandler())
    logging.getLogger("ironbook.supervisor").propagate = False
    supervisor = Supervisor()
    for name, process in cluster.feeds.items():
        supervisor.add(name, process, process.start)
    told = dict.fromkeys(supervisor.children, 0)
    while not done.is_set():
        supervisor.check()
        for name, child in supervisor.children.items():
            for message in child.events[told[name] :]:
                live.fault_lines.append(f"{live.t_s():6.1f}s  supervisor: {message}")
            told[name] = len(child.events)
        with contextlib.suppress(TimeoutError):
            await wait_for(done.wait(), timeout=FEED_CHECK_INTERVAL_S)


def _stop_all(processes: Sequence[ManagedProcess]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop(timeout_ms=STOP_TIMEOUT_MS)


async def _sample_every_second(
    live: LiveState, counter: SecondCounter, recorder: HistoryRecorder, client: LedgerClient
) -> None:
    """Close each second's sample a moment after it ends (operations that
    complete in a second are recorded within it)."""
    second = 0
    totals = {"ok": 0, "fail": 0, "info": 0, "bets_ok": 0}
    while True:
        assert live.started_monotonic is not None
        wake = live.started_monotonic + second + 1.05
        await asyncio.sleep(max(0.0, wake - time.monotonic()))
        counter.take(recorder.operations)
        sample = counter.sample(second, live.clients)
        live.timeline.samples.append(sample)
        totals["bets_ok"] += sample.bets_ok
        totals["fail"] += sample.refused
        totals["info"] += sample.unknown
        totals["ok"] += sample.ops - sample.refused - sample.unknown
        live.totals = dict(totals)
        live.retries = sum(client.resends.values())
        second += 1


async def _direct(
    cluster: LocalCluster, day: _Day, workload: RaceDayWorkload, rng: random.Random
) -> str:
    """The day's script: steady, surge (faults at the peak), the off."""
    options, live = day.options, day.live
    live.clients = options.steady_clients
    steady_end = options.steady_s
    live.phase = "steady"
    await _sleep_until(live, steady_end)
    live.timeline.phases.append(PhaseMark("steady", 0.0, round(steady_end, 1)))
    live.phase = "surge"
    workload.big_race_open = True
    ramp_steps = max(1, round(options.ramp_s))
    for step in range(1, ramp_steps + 1):
        clients = options.steady_clients + (
            (options.peak_clients - options.steady_clients) * step // ramp_steps
        )
        workload.set_active_clients(clients)
        live.clients = clients
        await _sleep_until(live, steady_end + options.ramp_s * step / ramp_steps)
    live.phase = "surge: faults at the peak"
    await _inject_planned(cluster, day, rng)
    live.phase = "surge"
    await _sleep_until(live, options.seconds)
    off_s = live.t_s()
    live.timeline.phases.append(PhaseMark("surge", round(steady_end, 1), round(off_s, 1)))
    live.phase = "the off"
    live.fault_lines.append(f"{off_s:6.1f}s  THE OFF: {BIG_RACE_NAME} closed to bets")
    winner = rng.randrange(SELECTIONS)
    closed, settled = await workload.the_off(winner)
    workload.set_active_clients(options.steady_clients)
    live.clients = options.steady_clients
    settled_s = live.t_s()
    live.timeline.phases.append(PhaseMark("the off", round(off_s, 1), round(settled_s, 1)))
    if closed is None or settled is None:
        outcome = "close or settle gave up (unknown outcome; judged by the checker)"
    elif isinstance(settled, core.Accepted) and isinstance(settled.result, SettlementReply):
        result = settled.result
        outcome = (
            f"won by {RUNNERS[winner]}; {result.bets_affected:,} bets settled, "
            f"£{result.paid_minor // 100:,}.{result.paid_minor % 100:02d} paid to the winners"
        )
    elif isinstance(settled, core.Rejected):
        outcome = f"settlement refused: {settled.code} ({settled.message})"
    else:
        outcome = f"settled: {settled.result!r}"
    live.fault_lines.append(f"{settled_s:6.1f}s  {BIG_RACE_NAME} {outcome}")
    return f"{BIG_RACE_NAME}: {outcome}"


async def _sleep_until(live: LiveState, t_s: float) -> None:
    await asyncio.sleep(max(0.0, t_s - live.t_s()))


async def _inject_planned(cluster: LocalCluster, day: _Day, rng: random.Random) -> None:
    options, live, recorder = day.options, day.live, day.recorder
    for number, planned in enumerate(options.faults):
        partition = min(planned.partition, cluster.partitions - 1)
        injector = FaultInjector(cluster, random.Random(rng.random()), partition=partition)
        kind, notes = available_kind(planned, injector)
        if notes and kind is not None and kind != planned.kinds[0]:
            note = f"{planned.label}: {'; '.join(notes)}; injected {kind} instead"
            live.timeline.skipped_faults.append(note)
            live.notes.append(note)
        if kind is None:
            note = f"{planned.label}: skipped ({'; '.join(notes)})"
            live.timeline.skipped_faults.append(note)
            live.notes.append(note)
            continue
        if number:
            await asyncio.sleep(FAULT_GAP_S)
        start_s = live.t_s()
        start_wall_ms = time.time_ns() // 1_000_000
        live.fault_in_progress = f"{kind} on partition {partition}"
        live.fault_lines.append(f"{start_s:6.1f}s  {kind} (partition {partition}) injected")
        try:
            record = await injector.inject(kind)
            day.fault_log.append(record)
        except FaultError as error:
            day.errors.append(f"{kind}: {error}")
            live.fault_lines.append(f"{live.t_s():6.1f}s  {kind} FAILED to heal: {error}")
            live.fault_in_progress = ""
            return
        finally:
            live.fault_in_progress = ""
        end_s = live.t_s()
        stall = longest_stall_ms(
            recorder.operations, partition, cluster.partitions, start_wall_ms, record.healed_wall_ms
        )
        live.timeline.faults.append(
            FaultMark(
                kind=kind,
                target=record.target,
                partition=partition,
                start_s=round(start_s, 2),
                end_s=round(end_s, 2),
                detail=record.detail,
                stall_ms=stall,
            )
        )
        stalled = f"; longest wait for a write {stall} ms" if stall is not None else ""
        live.fault_lines.append(
            f"{end_s:6.1f}s  {kind} {record.target} healed: {record.detail}{stalled}"
        )


def _alerts_on_the_timeline(day: _Day, records: Sequence[AlertRecord]) -> None:
    """Each alert on the timeline (fired, resolved) and, on each fault's
    mark, the alerts that detected it (`chaos.alerts` attribution)."""
    timeline, start_ms = day.live.timeline, day.live.started_wall_ms
    if start_ms is None:
        return  # the traffic never started: there is no timeline to put them on

    def t_s(wall_ms: int) -> float:
        return round((wall_ms - start_ms) / 1000, 2)

    timeline.alerts = [
        AlertMark(
            first.alertname,
            first.severity,
            alert_target(first),
            t_s(first.received_at_ms),
            None if resolved is None else t_s(resolved),
        )
        for first, resolved in alert_spans(records)
    ]
    if len(day.fault_log) != len(timeline.faults):
        return
    caught = attribute_alerts(day.fault_log, records).caught
    timeline.faults = [
        msgspec.structs.replace(
            mark,
            alerts=[
                f"{alert.alertname} +{(alert.received_at_ms - fault.injected_wall_ms) / 1000:.1f} s"
                for alert in alerts
            ],
        )
        for mark, fault, alerts in zip(timeline.faults, day.fault_log, caught, strict=True)
    ]


async def check_partitions(cluster: LocalCluster, operations: Sequence[Operation]) -> CheckReport:
    """The checker's verdict on every partition, combined (in a thread, so
    that the dashboard keeps drawing meanwhile)."""
    return await check_all_partitions(
        cluster.ops,
        operations,
        {partition: cluster.replica_ids(partition) for partition in range(cluster.partitions)},
        data_dir=cluster.data_dir,
        offload=True,
    )
