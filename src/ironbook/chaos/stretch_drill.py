"""The stretch-mode drill: a whole site lost under load, and no acknowledged
write lost with it.

    report = await run_stretch_drill(StretchDrillOptions(data_dir=path, seconds=60, seed=1))

A stretch cluster (`ironbook up --dr-mode stretch`: one NATS cluster over
sites a, b and c, every route through the WAN relay, one replica of every
stream and one ledger replica per site) runs the chaos workload (bets,
deposits, withdrawals, reads, a settler) for `seconds`. At a seeded moment one
site (seeded, or the one named, or the ledger leader's) is cut off for good:
its nats-server and every ledger replica on it are killed with SIGKILL, at
once, and nothing restarts them. The workload keeps going against the two
sites left (a quorum of every stream). Then the survivors converge and the
whole history is judged against the whole log by the history checker, as
`ironbook chaos` judges it.

The report: `rpo_acked_lost` is the acknowledged operations the log does not
hold (the checker's `lost`; 0 is the stretch guarantee), `rpo_s` how much
acknowledged history they span back from the cut (0 when none is lost),
`rto_s` the gap from the last acknowledgement before the cut to the first
acknowledgement of an operation sent after it, `bets_per_s` the bets
accepted per second over the workload's run, `wan_rtt_ms` the median round
trip the servers measure on their routes before the cut (through the relay),
with every stream's placement checked one replica per site before the cut
(`one_per_site`).
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.log import stream_name
from ironbook.chaos.evidence import causes
from ironbook.chaos.history import HISTORY_FILE, HistoryRecorder
from ironbook.chaos.partitions import check_all_partitions
from ironbook.chaos.stall import StallWatch
from ironbook.chaos.workload import Workload, WorkloadConfig, connect_workload_client
from ironbook.replication.checker import CheckReport
from ironbook.replication.history import Operation
from ironbook.services.local_cluster import LocalCluster, collect_heartbeats
from ironbook.services.stretch import STRETCH_SITES, stretch_view
from ironbook.settings import DrSettings

REPORT_FILE = "stretch-drill.json"
LEADER_SITE = "leader"
STREAM_LEADER_SITE = "stream-leader"
LEADERS_LISTEN_MS = 1_500
"""How long the drill listens to heartbeats just before the cut, to name the
ledger leaders the cut site held."""
START_TIMEOUT_MS = 120_000
KILL_REAP_TIMEOUT_MS = 10_000
SETTLE_TIMEOUT_MS = 60_000
LOAD_LIMIT_S = 3_600.0
"""The workload's own bound; the drill stops it long before."""


@dataclass(frozen=True, slots=True)
class StretchDrillOptions:
    data_dir: Path
    """A fresh directory: the drill makes its own stretch cluster there."""
    seconds: float = 60.0
    """How long the workload runs, the cut included."""
    seed: int = 1
    """Picks the site cut, the moment, and the workload's choices."""
    wan_rtt_ms: int = 30
    clients: int = 16
    cut_window: tuple[float, float] = (0.3, 0.6)
    """The cut falls at a seeded fraction of `seconds` between these bounds."""
    client_deadline_ms: int = 30_000
    """How long a client retries one command before giving up (`info`)."""
    cut_site: str | None = None
    """The site to cut: `a`, `b`, `c`, `leader` (the site of partition 0's
    ledger leader at the cut: a lease takeover), `stream-leader` (the site of
    `LEDGER_0`'s JetStream leader: a Raft election, the longest write gap),
    or None (seeded)."""
    before_cut: Callable[[], Coroutine[Any, Any, None]] | None = None
    """Runs from the workload's set-up on, while every site is up (a look at
    the cluster, such as `ironbook dr status`); the cut waits for it, so it
    falls at the seeded moment or when this is done, the later, and the load
    goes on after the cut as long as the seeded moment left."""

    def __post_init__(self) -> None:
        if self.cut_site not in (None, LEADER_SITE, STREAM_LEADER_SITE, *STRETCH_SITES):
            raise ValueError(
                f"cut_site must be one of {', '.join(STRETCH_SITES)}, {LEADER_SITE}, "
                f"{STREAM_LEADER_SITE}: {self.cut_site!r}"
            )
        low, high = self.cut_window
        if not 0 < low <= high < 1:
            raise ValueError(f"cut_window must be within (0, 1), low <= high: {self.cut_window}")
        if self.seconds <= 0 or self.clients < 1:
            raise ValueError("seconds must be positive and clients at least 1")


class StretchDrillReport(msgspec.Struct):
    mode: str
    verdict: str
    """pass: the checker passed, no acknowledged write was lost, writes were
    acknowledged after the cut, every stream was one replica per site, and
    the drill itself had no error."""
    seed: int
    seconds: float
    cut_site: str
    cut_at_s: float
    """When the site was cut, seconds after the workload started (the
    seeded moment, or later if `before_cut` took longer)."""
    killed: list[str]
    """`name:pid` of every process killed with the site."""
    site_led: list[str]
    """What the cut site led just before the cut: ledger leader replicas
    (`p0-r1`) and JetStream streams (`LEDGER_0`, `KV_ironbook_leases`, ...).
    A stream led there costs a Raft election (4-9 s) before it takes writes
    again; the lease bucket's, before a new ledger leader can take over."""
    rto_s: float | None
    """Last acknowledgement before the cut to the first acknowledgement of
    an operation sent after the cut."""
    rpo_acked_lost: int
    rpo_s: float
    ops: int
    accepted: int
    acked_after_cut: int
    duplicated: int
    conserved: bool
    wan_rtt_ms: float | None
    """Median route round trip the servers measured before the cut."""
    wan_rtt_ms_asked: int
    bets_per_s: float
    one_per_site: bool
    placement: dict[str, Any]
    """The cluster before the cut as `ironbook dr status --json` shows it:
    each node's site from its tags and its routes (round trips, peer ports),
    every stream's servers and their sites."""
    check_verdict: str | None
    violation_counts: dict[str, int]
    errors: list[str]
    data_dir: str
    history: str


@dataclass(slots=True)
class _Cut:
    site: str
    at_s: float
    killed: list[str] = field(default_factory=list)
    led: list[str] = field(default_factory=list)
    monotonic_ns: int = 0
    wall_ms: int = 0


def _site_processes(cluster: LocalCluster, site: str) -> list[ManagedProcess]:
    """The nats-server of `site` and every ledger replica standing in it."""
    assert cluster.stretch is not None
    (node,) = [name for name, where in cluster.stretch.sites.items() if where == site]
    index = int(node[1:])
    replicas = [p for name, p in cluster.replicas.items() if cluster.node_of(name) == index]
    return [cluster.nats.nodes[node].process, *replicas]


def _kill_site(
    cluster: LocalCluster, cut: _Cut, ledger_leaders: Sequence[str], streams: Sequence[str]
) -> None:
    """SIGKILL to the site's every process at once, then reap them; first
    note what the site led."""
    assert cluster.stretch is not None
    if cut.site == LEADER_SITE:
        leader = next((node for node in ledger_leaders if node.startswith("p0-")), None)
        cut.site = cluster.stretch.sites[f"n{cluster.node_of(leader or 'p0-r1')}"]
    elif cut.site == STREAM_LEADER_SITE:
        node = cluster.nats.stream_leader_seen(stream_name(0)) or "n1"
        cut.site = cluster.stretch.sites[node]
    processes = _site_processes(cluster, cut.site)
    names = {process.name for process in processes}
    cut.led = [node for node in ledger_leaders if node in names]
    leading = {stream: cluster.nats.stream_leader_seen(stream) for stream in streams}
    cut.led += [stream for stream, leader in leading.items() if leader in names]
    cut.killed = [f"{p.name}:{p.pid}" for p in processes]
    cut.monotonic_ns = time.monotonic_ns()
    cut.wall_ms = time.time_ns() // 1_000_000
    for process in processes:
        process.send(signal.SIGKILL)
    for process in processes:
        process.wait(timeout_ms=KILL_REAP_TIMEOUT_MS)


async def _cut_then_stop(
    cluster: LocalCluster,
    cut: _Cut,
    started: float,
    looked: asyncio.Task[None] | None,
    workload: Workload,
    options: StretchDrillOptions,
    streams: Sequence[str],
) -> None:
    """The cut at its moment (once `before_cut` is done), then the load for
    as long after it as the seeded moment left, and at least until
    `options.seconds` have passed; then the workload stops."""
    after_cut_s = options.seconds - cut.at_s
    if looked is not None:
        await looked
    listen_s = LEADERS_LISTEN_MS / 1000
    await asyncio.sleep(max(0.0, started + cut.at_s - listen_s - time.monotonic()))
    beats = await collect_heartbeats(cluster.ops, LEADERS_LISTEN_MS)
    leaders = sorted(beat.node_id for beat in beats.values() if beat.role == "leader")
    await asyncio.sleep(max(0.0, started + cut.at_s - time.monotonic()))
    await asyncio.to_thread(_kill_site, cluster, cut, leaders, streams)
    cut.at_s = round((cut.monotonic_ns / 1e9) - started, 2)
    await asyncio.sleep(max(after_cut_s, started + options.seconds - time.monotonic()))
    workload.stop()


async def _settled(cluster: LocalCluster) -> None:
    """Every ledger stream and partition led again on the sites left (a cut
    at the end of the load may leave an election under way)."""
    for partition in range(cluster.partitions):
        await asyncio.to_thread(
            cluster.nats.wait_stream_leader, stream_name(partition), timeout_ms=SETTLE_TIMEOUT_MS
        )
    await cluster.wait_leaders(timeout_ms=SETTLE_TIMEOUT_MS)


def _acked_writes(operations: Sequence[Operation]) -> list[Operation]:
    return [op for op in operations if op.outcome == "ok" and not op.is_query]


def _rto_s(operations: Sequence[Operation], cut_ns: int) -> float | None:
    acked = _acked_writes(operations)
    before = [op.complete_ns for op in acked if op.complete_ns <= cut_ns]
    # Sent after the cut: a reply already on its way when the site died
    # (the relay holds it for half a round trip) says nothing about recovery.
    after = [op.complete_ns for op in acked if op.invoke_ns > cut_ns]
    if not before or not after:
        return None
    return round((min(after) - max(before)) / 1e9, 3)


def _rpo_s(check: CheckReport | None, operations: Sequence[Operation], cut_wall_ms: int) -> float:
    """How far back from the cut the lost acknowledged operations reach."""
    if check is None:
        return 0.0
    lost_ids = {
        request_id
        for violation in check.violations
        if violation.kind == "lost"
        for request_id in violation.request_ids
    }
    lost = [op.complete_wall_ms for op in operations if op.request_id in lost_ids]
    return round(max(0, cut_wall_ms - min(lost)) / 1000, 3) if lost else 0.0


async def run_stretch_drill(
    options: StretchDrillOptions, say: Callable[[str], None] = lambda _: None
) -> StretchDrillReport:
    """One stretch drill (module docstring); a step that hangs says what it waits on."""
    stall = StallWatch(say)
    return await stall.around(_stretch_drill(options, stall.say))


async def _stretch_drill(
    options: StretchDrillOptions, say: Callable[[str], None]
) -> StretchDrillReport:
    data_dir = options.data_dir.resolve()
    history_path = data_dir / HISTORY_FILE
    if history_path.exists():
        raise FileExistsError(f"{history_path} exists: a drill needs a fresh data dir")
    rng = random.Random(options.seed)
    seeded_site = rng.choice(STRETCH_SITES)
    cut = _Cut(
        site=options.cut_site or seeded_site,
        at_s=round(rng.uniform(*options.cut_window) * options.seconds, 2),
    )
    recorder = HistoryRecorder(history_path)
    errors: list[str] = []
    check: CheckReport | None = None
    placement: dict[str, Any] = {}
    run_s = 0.0
    cluster = LocalCluster(
        data_dir, dr=DrSettings(enabled=True, mode="stretch", wan_rtt_ms=options.wan_rtt_ms)
    )
    try:
        say(f"starting a stretch cluster in {data_dir} ({options.wan_rtt_ms} ms WAN)")
        await asyncio.to_thread(cluster.start, START_TIMEOUT_MS)
        await cluster.wait_leaders(timeout_ms=START_TIMEOUT_MS)
        placement = await stretch_view(cluster.data_dir, cluster.ops)
        client = await connect_workload_client(
            cluster.ops,
            cluster.partitions,
            deadline_ms=options.client_deadline_ms,
            actor="stretch-drill",
        )
        try:
            workload = Workload(client, recorder, WorkloadConfig(seed=options.seed))
            which = {
                LEADER_SITE: "the ledger leader's site",
                STREAM_LEADER_SITE: "the log leader's site",
            }.get(cut.site, f"site {cut.site}")
            async with asyncio.TaskGroup() as group:
                looked: asyncio.Task[None] | None = None
                if options.before_cut is not None:
                    looked = group.create_task(options.before_cut())
                await workload.setup()
                say(
                    f"{options.clients} clients, {options.seconds:g} s; {which} cut at {cut.at_s} s"
                )
                started = time.monotonic()
                group.create_task(workload.run(LOAD_LIMIT_S, options.clients))
                streams = [str(row["stream"]) for row in placement.get("streams", [])]
                group.create_task(
                    _cut_then_stop(cluster, cut, started, looked, workload, options, streams)
                )
            run_s = time.monotonic() - started
        finally:
            await client.close()
        await _settled(cluster)
        say(f"site {cut.site} killed ({', '.join(cut.killed)}); checking the history")
        survivors = {
            partition: [
                node_id
                for node_id in cluster.replica_ids(partition)
                if cluster.replicas[node_id].is_running()
            ]
            for partition in range(cluster.partitions)
        }
        check = await check_all_partitions(
            cluster.ops, recorder.operations, survivors, data_dir=cluster.data_dir, say=say
        )
    except Exception as error:  # a crash of the drill is a failing drill, explained
        for cause in causes(error):
            errors.append(f"the drill crashed: {cause}")
            say(f"error: {errors[-1]}")
    finally:
        recorder.close()
        say("stopping the cluster")
        await asyncio.to_thread(cluster.stop)
    report = _report(options, cut, recorder.operations, check, placement, run_s, errors)
    report.data_dir = str(data_dir)
    report.history = str(history_path)
    (data_dir / REPORT_FILE).write_bytes(msgspec.json.encode(report))
    return report


def _report(
    options: StretchDrillOptions,
    cut: _Cut,
    operations: Sequence[Operation],
    check: CheckReport | None,
    placement: dict[str, Any],
    run_s: float,
    errors: list[str],
) -> StretchDrillReport:
    acked_after = sum(op.complete_ns > cut.monotonic_ns for op in _acked_writes(operations))
    bets = sum(op.kind == "place_bet" and op.outcome == "ok" for op in operations)
    rtts = placement.get("route_rtt_ms")
    one_per_site = bool(placement.get("one_per_site"))
    lost = check.lost if check is not None else 0
    passed = (
        not errors
        and check is not None
        and check.verdict == "pass"
        and lost == 0
        and cut.monotonic_ns > 0
        and acked_after > 0
        and one_per_site
    )
    return StretchDrillReport(
        mode="stretch",
        verdict="pass" if passed else "fail",
        seed=options.seed,
        seconds=options.seconds,
        cut_site=cut.site,
        cut_at_s=cut.at_s,
        killed=cut.killed,
        site_led=cut.led,
        rto_s=_rto_s(operations, cut.monotonic_ns) if cut.monotonic_ns else None,
        rpo_acked_lost=lost,
        rpo_s=_rpo_s(check, operations, cut.wall_ms),
        ops=len(operations),
        accepted=len(_acked_writes(operations)),
        acked_after_cut=acked_after if cut.monotonic_ns else 0,
        duplicated=check.duplicated if check is not None else 0,
        conserved=check.conserved if check is not None else False,
        wan_rtt_ms=round(statistics.median(rtts), 1) if isinstance(rtts, list) and rtts else None,
        wan_rtt_ms_asked=options.wan_rtt_ms,
        bets_per_s=round(bets / run_s, 1) if run_s > 0 else 0.0,
        one_per_site=one_per_site,
        placement=placement,
        check_verdict=None if check is None else check.verdict,
        violation_counts={} if check is None else dict(check.violation_counts),
        errors=errors,
        data_dir="",
        history="",
    )
