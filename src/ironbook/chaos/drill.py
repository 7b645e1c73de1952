"""A disaster-recovery drill (`ironbook dr drill`, docs/dr.md "Drills"): the
chaos workload on site A of a DR pair, site A cut off at a seeded moment,
the loss detected, site B promoted, the workload going on against B, and
the whole history judged against B's log.

    report = await run_drill(DrillOptions(data_dir=path, seed=1, duration_s=120))

In order:

1. Both sites start (`LocalCluster` with a DR site, as `ironbook up
   --dr-site`); the drill waits until B's mirrors hold what A holds and the
   links' RTT is measured.
2. The chaos workload (`chaos.workload`) runs on one client that knows both
   sites, site A's servers first: when none of A's answers it reconnects to
   B, and its requests in flight are retried there with the same request ids.
3. At `cut_at_s` (seeded, in the first half of the duration, after a
   warm-up), every site-A process is killed with SIGKILL at once: its three
   nats-servers, every service connected to it (replicas, audit verifier
   and recorder, gateways, feed, backup) and the WAN relay (what it still
   held for B is lost, as in-flight packets are when a site's network goes).
4. Detection, as an operator's tooling sees it (`dr status`): site A answers
   no probe and B's mirror has heard nothing from it, both for
   `DETECT_SILENT_S` (`services.dr.wait_site_a_lost`).
5. Site B promoted by `dr promote --site b`'s own code
   (`services.dr_promotion.promote_site_b`): primary.json, fence, mirrors
   promoted, services restarted against B, `dr_takeover` recorded.
6. The workload goes on for the rest of the duration (and until B has
   acknowledged a write, bounded), then stops; B's replicas converge and the
   history is checked against B's log with the `SiteLoss` allowance (what A
   acknowledged and B's mirror never got is counted as `rpo_acked_lost`,
   not lost); then the audit trail on B (`chaos.audit`), shown, not judged.
7. Failback: site A's servers and the link come back with their data (fenced,
   as any start of site A after a promotion), `dr failback`'s own code
   (`services.dr_failback.failback`) re-seeds A from B and makes it primary
   again, and the whole history is checked once more, against A's log now:
   every write B acknowledged must be there (`failback_check`).

This is the mirror-mode drill; `chaos.stretch_drill` is stretch mode's,
and `chaos.drill_modes` runs either or both (`ironbook dr drill --dr-mode`).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ironbook.adapters.nats.log import stream_name
from ironbook.adapters.nats.mirrors import MirrorState
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.chaos.audit import AuditCheck, audit_line, check_audit
from ironbook.chaos.evidence import causes
from ironbook.chaos.history import HISTORY_FILE, HistoryRecorder
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.stall import StallWatch
from ironbook.chaos.workload import Workload, WorkloadConfig, connect_workload_client
from ironbook.replication.checker import CheckReport, RpoLoss, SiteLoss
from ironbook.replication.history import Operation
from ironbook.services import dr as dr_site
from ironbook.services.dr_failback import FailbackReport, failback
from ironbook.services.dr_promotion import promote_site_b
from ironbook.services.heartbeat_watch import HeartbeatWatch
from ironbook.services.local_cluster import LocalCluster
from ironbook.settings import DrSettings

MIN_DURATION_S = 20.0
WARM_UP_S = 10.0
"""The cut comes no earlier than this (or a quarter of a short duration)."""
DETECT_SILENT_S = 3.0
"""Site A unreachable, and B's mirror silent, this long: site A is lost."""
DETECT_TIMEOUT_S = 60.0
START_TIMEOUT_MS = 180_000
LINKS_TIMEOUT_S = 90.0
"""How long B's mirrors may take to catch up with A, and the links to report an RTT."""
FIRST_ACK_TIMEOUT_S = 120.0
"""After the duration, how long the workload goes on waiting for B's first acknowledgement."""
FIRST_ACK_POLL_S = 0.5
CLIENT_DEADLINE_MS = 90_000
"""A client retries one command this long: through detection, promotion and
B's services starting, so that what was in flight at the cut resolves on B."""
AUDIT_SETTLE_S = 20.0
ACTOR = "operator:dr-drill"


@dataclass(frozen=True, slots=True)
class DrillOptions:
    data_dir: Path
    seed: int = 1
    duration_s: float = 120.0
    wan_rtt_ms: int = 30
    clients: int = 16

    def __post_init__(self) -> None:
        if not math.isfinite(self.duration_s) or self.duration_s < MIN_DURATION_S:
            raise ValueError(f"a drill needs at least {MIN_DURATION_S:g} s (--duration)")
        if self.clients < 1:
            raise ValueError("a drill needs at least one client (--clients)")
        if self.wan_rtt_ms < 0:
            raise ValueError("--wan-rtt-ms cannot be negative")

    @property
    def warm_up_s(self) -> float:
        return min(WARM_UP_S, self.duration_s / 4)

    @property
    def cut_at_s(self) -> float:
        """Seconds into the workload when site A is cut off: drawn from the
        seed, after the warm-up and within the first half."""
        return round(random.Random(self.seed).uniform(self.warm_up_s, self.duration_s / 2), 2)

    def command(self) -> str:
        """The command line that reruns this drill."""
        return (
            f"ironbook dr drill --seed {self.seed} --duration {self.duration_s:g} "
            f"--wan-rtt-ms {self.wan_rtt_ms} --clients {self.clients} --dr-mode mirror"
        )


class DrillMarks(msgspec.Struct):
    """Wall-clock milliseconds of the drill's steps (0: not reached)."""

    workload_ms: int = 0
    cut_ms: int = 0
    detected_ms: int = 0
    promote_started_ms: int = 0
    promoted_ms: int = 0
    failback_started_ms: int = 0
    failed_back_ms: int = 0
    last_ack_a_ms: int = 0
    """The last write acknowledged before the promotion began (by site A)."""
    first_ack_b_ms: int = 0
    """The first write acknowledged after it (by site B)."""
    end_ms: int = 0


class DrillReport(msgspec.Struct):
    mode: str
    verdict: str
    """pass: the checker passed (with the RPO allowance), nothing was
    duplicated, money was conserved on B, the failback brought every write
    back to A (`failback_check` passed too), and the drill itself had no error."""
    seed: int
    duration_s: float
    ops: int
    duplicated: int | None
    conserved: bool | None
    rto_s: float | None
    """Last write acknowledged by A to the first acknowledged by B (detection included)."""
    rpo_acked_lost: int | None
    """Writes (and logged refusals) A acknowledged that B's log lacks."""
    rpo_s: float | None
    """From the first of those acknowledgements to A's last one; 0 when none was lost."""
    bets_per_s: float | None
    """Bets acknowledged per second over the workload's run (the outage included)."""
    failback_s: float | None
    """The failback, from site A's servers restarted to A primary and B
    mirroring it again (`dr failback`'s own `failback_s`)."""
    failback: str
    """What the failback did, in one line (or why it did not)."""
    wan_rtt_ms: float | None
    """The links' RTT, median over site B's servers' `/leafz` just before the cut."""
    wan_rtt_ms_configured: int
    link_rtt_ms: list[float]
    cut_at_s: float
    """Seconds into the workload when site A was cut off (seeded)."""
    detect_s: float | None
    """From the cut to site A judged lost."""
    promote_s: float | None
    """The promotion, from its start to every service restarted against B."""
    acks_on_a: int
    acks_on_b: int
    kept_seq: dict[str, int]
    """Per ledger stream: the last of A's entries B held when it was promoted."""
    gap_before_cut: dict[str, int | None]
    """Per ledger stream, just before the cut: A's last sequence minus B's
    mirror's (None: a site did not answer)."""
    rpo_lost: list[RpoLoss]
    rpo_window_reads: int | None
    promotion: list[str]
    check: CheckReport | None
    audit: AuditCheck | None
    """`audit verify` of B's logs after the drill: shown, not part of the verdict."""
    audit_summary: str
    failback_report: FailbackReport | None
    failback_check: CheckReport | None
    """The whole history checked again after the failback, against site A's log."""
    marks: DrillMarks
    load_average: list[float]
    """1, 5 and 15 minute load averages when the workload stopped."""
    errors: list[str]
    command: str
    data_dir: str
    history: str


def require_fresh(data_dir: Path) -> None:
    """`FileExistsError` unless `data_dir` is new or empty: a drill kills
    and re-seeds what runs there, so never an existing cluster's."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise FileExistsError(
            f"{data_dir} is not empty: a drill needs a new or empty --data-dir (it starts, "
            "kills and re-seeds its own sites there)"
        )


def _seconds(from_ms: int, to_ms: int) -> float | None:
    return round((to_ms - from_ms) / 1000, 3) if from_ms and to_ms else None


def acked_writes(operations: Sequence[Operation]) -> list[Operation]:
    """Writes the ledger acknowledged, in completion order."""
    return sorted(
        (op for op in operations if op.outcome == "ok" and not op.is_query),
        key=lambda op: op.complete_wall_ms,
    )


async def run_drill(
    options: DrillOptions, say: Callable[[str], None] = lambda _: None
) -> DrillReport:
    """One drill (module docstring); `FileExistsError` if `options.data_dir`
    holds an earlier run."""
    data_dir = options.data_dir.resolve()
    require_fresh(data_dir)
    stall = StallWatch(say)
    drill = _Drill(options, data_dir, stall.say)
    try:
        await stall.around(drill.on_both_sites())
    except Exception as error:  # a crash of the drill is a failing drill, explained
        for cause in causes(error):
            drill.fail(f"the drill crashed: {cause}")
    finally:
        drill.recorder.close()
    return drill.report()


@dataclass(slots=True)
class _Drill:
    options: DrillOptions
    data_dir: Path
    say: Callable[[str], None]
    recorder: HistoryRecorder = field(init=False)
    marks: DrillMarks = field(default_factory=DrillMarks)
    errors: list[str] = field(default_factory=list)
    link_rtt_ms: list[float] = field(default_factory=list)
    lost: dr_site.SiteLost | None = None
    kept_seq: dict[int, int] = field(default_factory=dict)
    gap_before_cut: dict[str, int | None] = field(default_factory=dict)
    promotion: list[str] = field(default_factory=list)
    check: CheckReport | None = None
    audit: AuditCheck | None = None
    failback: FailbackReport | None = None
    failback_s: float | None = None
    failback_check: CheckReport | None = None
    load_average: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recorder = HistoryRecorder(self.data_dir / HISTORY_FILE)

    def fail(self, error: str) -> None:
        self.errors.append(error)
        self.say(f"error: {error}")

    async def on_both_sites(self) -> None:
        options, say = self.options, self.say
        cluster = LocalCluster(
            self.data_dir, dr=DrSettings(enabled=True, wan_rtt_ms=options.wan_rtt_ms)
        )
        try:
            say(f"starting both sites, WAN RTT {options.wan_rtt_ms} ms, in {self.data_dir}")
            await asyncio.to_thread(cluster.start, START_TIMEOUT_MS)
            await cluster.wait_leaders(timeout_ms=START_TIMEOUT_MS)
            await self._links_up(cluster)
            await self._run(cluster)
        finally:
            say("stopping both sites")
            cluster.stop()

    async def _links_up(self, cluster: LocalCluster) -> None:
        """Until B's mirrors hold what A holds and a link reports its RTT."""
        assert cluster.site_b is not None
        a, b = cluster.site_endpoint(dr_site.SITE_A), cluster.site_endpoint(dr_site.SITE_B)
        streams = cluster.mirrored_streams
        deadline = time.monotonic() + LINKS_TIMEOUT_S
        while True:
            on_a = await dr_site.stream_states(a, streams)
            on_b = await dr_site.stream_states(b, streams)
            behind = [
                name
                for name in streams
                if on_a[name] is None
                or on_b[name] is None
                or on_b[name].last_seq < on_a[name].last_seq  # type: ignore[union-attr]
            ]
            self.link_rtt_ms = await self._measure_links(cluster)
            if not behind and self.link_rtt_ms:
                say_rtt = ", ".join(f"{rtt:.1f}" for rtt in self.link_rtt_ms)
                self.say(f"site b mirrors site a; links' RTT {say_rtt} ms")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"site b did not catch up with site a in {LINKS_TIMEOUT_S:g} s "
                    f"(behind: {behind}; links measured: {self.link_rtt_ms})"
                )
            await asyncio.sleep(0.5)

    async def _mirrors_follow(self, cluster: LocalCluster) -> None:
        """Once the workload's accounts are open: B's mirror of each ledger
        log holds what A's holds then (bounded). A mirror that does not copy
        would make every acknowledgement an RPO loss: the drill stops."""
        ledgers = [stream_name(p) for p in range(cluster.partitions)]
        a, b = cluster.site_endpoint(dr_site.SITE_A), cluster.site_endpoint(dr_site.SITE_B)
        wanted = await dr_site.stream_states(a, ledgers)
        started = time.monotonic()
        while True:
            held = await dr_site.stream_states(b, ledgers)
            behind = {
                name: (_last_seq(state), _last_seq(held[name]))
                for name, state in wanted.items()
                if state is None or _last_seq(held[name]) < state.last_seq
            }
            if not behind:
                took_s = time.monotonic() - started
                self.say(f"site b's mirrors hold the workload's setup ({took_s:.1f} s)")
                return
            if time.monotonic() - started > LINKS_TIMEOUT_S:
                raise dr_site.DrError(
                    f"site b's mirrors did not copy site a's ledger in {LINKS_TIMEOUT_S:g} s "
                    f"(stream: (a's last seq, b's)): {behind}"
                )
            await asyncio.sleep(0.5)

    @staticmethod
    async def _measure_links(cluster: LocalCluster) -> list[float]:
        assert cluster.site_b is not None
        urls = [node.monitor_url for node in cluster.site_b.nodes.values()]
        rtts = await asyncio.to_thread(dr_site.measured_link_rtts_ms, urls)
        return sorted(round(rtt, 1) for rtt in rtts)

    async def _run(self, cluster: LocalCluster) -> None:
        options, say = self.options, self.say
        assert cluster.site_b is not None
        # Site A's servers first; B's only when none of A's answers.
        both_sites = NatsEndpoint(
            f"{cluster.nats.url},{cluster.site_b.url}", cluster.credentials("ops"), in_order=True
        )
        heartbeats = HeartbeatWatch(both_sites)
        client = await connect_workload_client(
            both_sites, cluster.partitions, deadline_ms=CLIENT_DEADLINE_MS, actor="dr-drill"
        )
        try:
            await heartbeats.start()
            workload = Workload(client, self.recorder, WorkloadConfig(seed=options.seed))
            await workload.setup()
            await self._mirrors_follow(cluster)
            say(
                f"workload: {options.clients} clients for {options.duration_s:g} s; "
                f"site a is cut off at {options.cut_at_s:g} s"
            )
            self.marks.workload_ms = _now_ms()
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(workload.run(options.duration_s + 3_600, options.clients))
                    group.create_task(self._cut_promote_then_stop(cluster, workload))
            except* Exception as group_error:
                for cause in causes(group_error):
                    self.fail(f"the drill failed: {cause}")
            self.marks.end_ms = _now_ms()
            self.load_average = [round(load, 2) for load in os.getloadavg()]
        finally:
            await client.close()
            await heartbeats.stop()
        if not self.marks.promoted_ms:
            self.fail("site b was never promoted: no history to check against its log")
            return
        await self._check(cluster, heartbeats)
        try:
            await self._fail_back(cluster)
        except Exception as error:  # a failback that fails fails the drill, explained
            for cause in causes(error):
                self.fail(f"the failback failed: {cause}")

    async def _check_history(self, cluster: LocalCluster) -> CheckReport:
        """The whole history against the primary's log, once its replicas
        converged, with the allowance for what site A took with it."""
        losses = {
            partition: SiteLoss(
                acks_before_ms=self.marks.promote_started_ms, kept_seq=self.kept_seq[partition]
            )
            for partition in range(cluster.partitions)
        }
        return await check_all_partitions(
            cluster.ops,
            self.recorder.operations,
            {p: cluster.replica_ids(p) for p in range(cluster.partitions)},
            data_dir=cluster.data_dir,
            site_losses=losses,
            say=self.say,
        )

    async def _fail_back(self, cluster: LocalCluster) -> None:
        """Site A back with its data, A primary again, the history checked on A."""
        say = self.say
        assert cluster.relay is not None
        self.marks.failback_started_ms = _now_ms()
        say("site a back with its data (fenced): its servers and the link restarted")
        cluster.relay.start()
        for name in cluster.nats.nodes:
            cluster.nats.start_node(name, wait=False)
        await asyncio.to_thread(cluster.nats.wait_healthy, timeout_ms=START_TIMEOUT_MS)
        async with cluster.operations:  # as `dr failback` takes it
            self.failback = await failback(cluster, ACTOR, lambda line: say(f"failback: {line}"))
        self.marks.failed_back_ms = _now_ms()
        self.failback_s = _seconds(self.marks.failback_started_ms, self.marks.failed_back_ms)
        say("checking the whole history again, against site a's log")
        self.failback_check = await self._check_history(cluster)

    async def _cut_promote_then_stop(self, cluster: LocalCluster, workload: Workload) -> None:
        options, say = self.options, self.say
        started = time.monotonic()
        try:
            await asyncio.sleep(max(0.0, options.cut_at_s - (time.monotonic() - started)))
            self.link_rtt_ms = await self._measure_links(cluster) or self.link_rtt_ms
            self.gap_before_cut = await _ledger_gaps(cluster)
            self.marks.cut_ms = _now_ms()
            killed = _cut_site_a(cluster)
            say(f"{_since(started)}  site a cut off: SIGKILL of {', '.join(killed)}")
            self.lost = await dr_site.wait_site_a_lost(
                cluster.site_endpoint(dr_site.SITE_A),
                cluster.site_endpoint(dr_site.SITE_B),
                stream_name(0),
                silent_s=DETECT_SILENT_S,
                timeout_s=DETECT_TIMEOUT_S,
            )
            self.marks.detected_ms = _now_ms()
            say(
                f"{_since(started)}  site a lost: unreachable {self.lost.unreachable_s:g} s, "
                f"b's mirror silent {self.lost.mirror_silent_s:g} s"
            )
            ledgers = [stream_name(p) for p in range(cluster.partitions)]
            held = await dr_site.stream_states(cluster.site_endpoint(dr_site.SITE_B), ledgers)
            for partition, name in enumerate(ledgers):
                state = held[name]
                if state is None:
                    raise dr_site.DrError(f"site b does not answer for {name}")
                self.kept_seq[partition] = state.last_seq
            self.marks.promote_started_ms = _now_ms()
            async with cluster.operations:  # as `dr promote` takes it: one operation at a time
                self.promotion = await promote_site_b(
                    cluster, ACTOR, lambda line: say(f"{_since(started)}  promotion: {line}")
                )
            self.marks.promoted_ms = _now_ms()
            await asyncio.sleep(max(0.0, options.duration_s - (time.monotonic() - started)))
            for _ in range(int(FIRST_ACK_TIMEOUT_S / FIRST_ACK_POLL_S)):
                if self._acked_by_b():
                    break
                await asyncio.sleep(FIRST_ACK_POLL_S)
        finally:
            workload.stop()
        say(f"{_since(started)}  load stopped")

    def _acked_by_b(self) -> bool:
        after = self.marks.promote_started_ms
        return any(
            op.outcome == "ok" and not op.is_query and op.complete_wall_ms >= after
            for op in reversed(self.recorder.operations)
        )

    async def _check(self, cluster: LocalCluster, heartbeats: HeartbeatWatch) -> None:
        say = self.say
        say("waiting for site b's replicas to converge, then checking the history against its log")
        self.check = await self._check_history(cluster)
        say("verifying site b's audit trail")
        self.audit = await check_audit(
            cluster.ops,
            cluster.data_dir,
            cluster.partitions,
            {p: heartbeats.leader_terms(p) for p in range(cluster.partitions)},
            say,
            settle_s=AUDIT_SETTLE_S,
        )

    def report(self) -> DrillReport:
        options, marks, check = self.options, self.marks, self.check
        acked = acked_writes(self.recorder.operations)
        boundary = marks.promote_started_ms or (marks.end_ms or _now_ms()) + 1
        on_a = [op for op in acked if op.complete_wall_ms < boundary]
        on_b = [op for op in acked if op.complete_wall_ms >= boundary]
        marks.last_ack_a_ms = on_a[-1].complete_wall_ms if on_a else 0
        marks.first_ack_b_ms = on_b[0].complete_wall_ms if on_b else 0
        rpo_s = None
        if check is not None:
            first_lost = min((loss.acked_wall_ms for loss in check.rpo_lost), default=None)
            rpo_s = 0.0 if first_lost is None else _seconds(first_lost, marks.last_ack_a_ms)
        back = self.failback_check
        passed = (
            check is not None
            and check.verdict == "pass"
            and check.duplicated == 0
            and check.conserved
            and back is not None
            and back.verdict == "pass"
            and not self.errors
        )
        return DrillReport(
            mode="mirror",
            verdict="pass" if passed else "fail",
            seed=options.seed,
            duration_s=options.duration_s,
            ops=len(self.recorder.operations),
            duplicated=None if check is None else check.duplicated,
            conserved=None if check is None else check.conserved,
            rto_s=_seconds(marks.last_ack_a_ms, marks.first_ack_b_ms),
            rpo_acked_lost=None if check is None else check.rpo_acked_lost,
            rpo_s=rpo_s,
            bets_per_s=_bets_per_s(self.recorder.operations, marks),
            failback_s=self.failback_s,
            failback=self._failback_line(),
            wan_rtt_ms=round(statistics.median(self.link_rtt_ms), 1) if self.link_rtt_ms else None,
            wan_rtt_ms_configured=options.wan_rtt_ms,
            link_rtt_ms=self.link_rtt_ms,
            cut_at_s=options.cut_at_s,
            detect_s=_seconds(marks.cut_ms, marks.detected_ms),
            promote_s=_seconds(marks.promote_started_ms, marks.promoted_ms),
            acks_on_a=len(on_a),
            acks_on_b=len(on_b),
            kept_seq={stream_name(p): seq for p, seq in sorted(self.kept_seq.items())},
            gap_before_cut=self.gap_before_cut,
            rpo_lost=[] if check is None else check.rpo_lost,
            rpo_window_reads=None if check is None else check.rpo_window_reads,
            promotion=self.promotion,
            check=check,
            audit=self.audit,
            audit_summary="not run" if self.audit is None else audit_line(self.audit),
            failback_report=self.failback,
            failback_check=self.failback_check,
            marks=marks,
            load_average=self.load_average,
            errors=self.errors,
            command=options.command(),
            data_dir=str(self.data_dir),
            history=str(self.data_dir / HISTORY_FILE),
        )

    def _failback_line(self) -> str:
        if self.failback is None:
            return "not done: " + ("; ".join(self.errors) or "the drill stopped before it")
        copied = sum(self.failback.copied_entries.values())
        back = self.failback_check
        verdict = "not checked" if back is None else f"history on site a: {back.verdict}"
        return (
            f"site a primary again in epoch {self.failback.epoch} ({copied} entries copied "
            f"from site b; site b mirrors it again); {verdict}"
        )


async def _ledger_gaps(cluster: LocalCluster) -> dict[str, int | None]:
    """Per ledger stream: A's last sequence minus B's mirror's, read at about
    the same moment (as `dr status` computes it)."""
    ledgers = [stream_name(p) for p in range(cluster.partitions)]
    async with asyncio.TaskGroup() as group:
        on_a = group.create_task(
            dr_site.stream_states(cluster.site_endpoint(dr_site.SITE_A), ledgers)
        )
        on_b = group.create_task(
            dr_site.stream_states(cluster.site_endpoint(dr_site.SITE_B), ledgers)
        )
    gaps: dict[str, int | None] = {}
    for name in ledgers:
        a, b = on_a.result()[name], on_b.result()[name]
        gaps[name] = None if a is None or b is None else a.last_seq - b.last_seq
    return gaps


def _cut_site_a(cluster: LocalCluster) -> list[str]:
    """SIGKILL of every site-A process at once (its nats-servers, every
    service connected to it, and the WAN relay), then each reaped; their names."""
    assert cluster.relay is not None
    processes = [
        *(node.process for node in cluster.nats.nodes.values()),
        *cluster.service_processes().values(),
        # The link too: what A sent and the relay still holds (its WAN delay)
        # is lost with the site, as in-flight packets are when a site's
        # network goes down.
        cluster.relay,
    ]
    running = [process for process in processes if process.is_running()]
    for process in running:
        process.send(signal.SIGKILL)
    for process in running:
        if not process.wait(timeout_ms=10_000):
            raise RuntimeError(f"{process.name} (pid {process.pid}) survived SIGKILL")
    return [process.name for process in running]


def _bets_per_s(operations: Sequence[Operation], marks: DrillMarks) -> float | None:
    if not (marks.workload_ms and marks.end_ms > marks.workload_ms):
        return None
    bets = sum(op.kind == "place_bet" and op.outcome == "ok" for op in operations)
    return round(bets / ((marks.end_ms - marks.workload_ms) / 1000), 1)


def _last_seq(state: MirrorState | None) -> int:
    return -1 if state is None else state.last_seq


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _since(started: float) -> str:
    return f"{time.monotonic() - started:6.1f} s"
