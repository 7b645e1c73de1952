"""The detection benchmark: seeded gradual faults on a live cluster, judged
against what `ironbook watch` and the fixed-threshold rules made of them.

In one run, on this machine, in a temp dir: a local cluster (3 nats-server
nodes, R3, fsync always; 3 replicas of one partition) under its supervisor,
the NATS collector, node_exporter watching only a small ext2 filesystem
loop-mounted for the run (its image in /dev/shm, never on the machine's own
disk),
a process that leaks memory on command (it serves its process metrics the
way a replica does), and a Prometheus scraping all of them every second with
deploy/prometheus-alerts.yml loaded. A paced bettor places bets the whole
time. The watcher's detectors read only that Prometheus.

After a calm warm-up, the faults of `--faults`, in an order and with sizes
drawn from `--seed`, each after a calm stretch (`--seconds`, ±30 %):

- `disk_fill`: a file grows in the loop filesystem at 0.6–1.5 MB/s;
  breach: less than 5 % of it free.
- `memory_leak`: the leaking process grows by 4–8 MB/s; breach: its resident
  memory passes the replica memory limit the watcher is given.
- `nats_cpu`: the NATS node leading the partition's stream is starved by
  SIGSTOP duty cycles (1 s period) whose stopped share ramps from 5 % to
  90 % over 30–60 s; breach: the bettor's p99 latency over the last 5 s
  passes 250 ms (the bet latency SLO's threshold) or twice its p99 over the
  15 s before the fault, whichever is higher (a loaded machine's calm p99
  can be above 250 ms already).
- `replica_stall`: a follower replica is SIGSTOPped in 4 s cycles whose
  stopped share ramps from 10 % to 100 % over 20–40 s, so its lag grows;
  breach: it has been stopped, applying nothing, for 3 s.

Each fault ends at its breach (or after `--fault-seconds`), or once a
remediation healed it: the leaking process restarted, the stalled follower
replaced by a new process, or (`HEAL_CONFIRM_S` later, the starvation going
on meanwhile) the stream's leadership moved off the starved node. An alert
belongs to a fault when it starts between the fault's start and 20 s after
its end and is on a series (or is a rule) the fault explains
(`EXPLAINED_BY`); any other alert is false. Per detector (`windowed_gaussian`,
`half_space_trees`, `forecast`, all of them as `watch`) and for the
`threshold_rules` (Prometheus's own `ALERTS`): `precision` (alerts that
belong to a fault / all alerts), `recall` (faults with an alert / faults),
`lead_time_s_median` (breach time minus the first alert's time, over the
faults detected; positive: warned before the breach) and
`false_alerts_per_hour` (over the calm time).

With `--remediation live` (the default) the watcher's findings drive
`services.remediate` on the cluster, as `ironbook up --monitoring` with
`watch.remediate` does (the leaking process stands in for a replica: its
restart is what a replica's graceful restart would be); `dry-run` decides
and records without acting; `off` only detects. `remediation` in the JSON
lists every action and `healed_before_breach`: the share of the faults a
remediation exists for (all but `disk_fill`, which only pages) where an
action on the fault's own target, of the kind that heals it, took effect
before the fault's first breach (a fault healed without a breach counts);
per detector family, counting only the actions its findings triggered. In a
dry run, `decided_before_breach` says the same of the decisions.

    ironbook bench detect --seed 11 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ironbook.adapters import eventloop
from ironbook.adapters.nats.localproc import LOOPBACK, ManagedProcess, PortLease
from ironbook.adapters.procfs import process_stat
from ironbook.adapters.prometheus import LocalPrometheus, binary
from ironbook.benchmarks.children import ChildProcess
from ironbook.benchmarks.common import command_line, log, machine_info
from ironbook.benchmarks.ledger import Tally, connect_bench_client, drive, set_up
from ironbook.services.detect import Finding
from ironbook.services.local_cluster import LocalCluster, collect_heartbeats
from ironbook.services.process import process_command
from ironbook.services.remediate import (
    ActionKind,
    Limits,
    LocalClusterActions,
    Locator,
    RemediationRecord,
    Remediator,
)
from ironbook.services.watch import Prometheus, Watcher, run, watch_config, watched_series
from ironbook.settings import WatchSettings

FAULT_KINDS = ("disk_fill", "memory_leak", "nats_cpu", "replica_stall")
DETECTORS = ("windowed_gaussian", "half_space_trees", "forecast")
GRACE_S = 20.0
WARMUP_S = 60.0
RECOVERY_S = 15.0
MiB = 1024 * 1024
DISK_BYTES = 64 * MiB
DISK_BREACH_FREE = 0.05
MEMORY_LIMIT_BYTES = 384 * MiB
FORECAST_HORIZON_S = 300.0
LATENCY_BREACH_MS = 250.0
CALM_LATENCY_S = 15.0
BREACH_WINDOW_S = 5.0
BREACH_MIN_BETS = 5
STALL_BREACH_S = 3.0
HEAL_CONFIRM_S = 5.0
"""After the starved node's leaderships moved: the starvation goes on this
long, so that a breach it still causes is seen."""
BETTORS = 3
BET_PAUSE_S = 0.03
ACCOUNTS = 200
THRESHOLD_RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus-alerts.yml"
"""The fixed-threshold rules, from the source checkout the bench runs in."""
REMEDIATION_MODES = ("live", "dry-run", "off")
LEAKER = "memory-leaker"
HEALED_BY: dict[str, frozenset[str]] = {
    "memory_leak": frozenset({"restart_replica"}),
    "nats_cpu": frozenset({"move_nats_leaders"}),
    "replica_stall": frozenset({"kill_restart", "restart_replica"}),
}
"""The fault kinds a remediation exists for, and the actions that heal each."""
SHM = Path("/dev/shm")
_STEP_S = 0.1
_DISK_FSTYPE = "ext2"
_ONLY_EXT2 = r"^(?:[^e].*|e[^x].*|ex[^t].*|ext[^2].*|ext2.+|e|ex|ext)$"
"""node_exporter's fs-types-exclude: everything but ext2 (RE2 has no
look-ahead), so only the run's own filesystem is watched, never the host's."""


@dataclass(frozen=True, slots=True)
class PlannedFault:
    kind: str
    calm_s: float
    size: float
    """disk_fill, memory_leak: bytes per second; nats_cpu, replica_stall: ramp seconds."""


def plan_faults(seed: int, kinds: Sequence[str], calm_s: float) -> list[PlannedFault]:
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    sizes: dict[str, Callable[[], float]] = {
        "disk_fill": lambda: rng.uniform(0.6, 1.5) * MiB,
        "memory_leak": lambda: rng.uniform(4, 8) * MiB,
        "nats_cpu": lambda: rng.uniform(30, 60),
        "replica_stall": lambda: rng.uniform(20, 40),
    }
    return [
        PlannedFault(kind, round(calm_s * rng.uniform(0.7, 1.3), 1), round(sizes[kind](), 1))
        for kind in order
    ]


@dataclass(slots=True)
class FaultRecord:
    kind: str
    size: float
    started_s: float
    ended_s: float = 0.0
    breach_s: float | None = None
    breach_rule: str = ""
    target: str = ""
    """The process the fault hurts (a replica, a NATS server, the leaker)."""
    healed_s: float | None = None
    """When the injector saw its target healed (restarted, or no longer leading)."""


EXPLAINED_BY: dict[str, frozenset[str]] = {
    "disk_fill": frozenset(
        {"disk_free_bytes", "IronbookDiskFillingUp", "IronbookDiskFillingUpSoon"}
    ),
    # A restart by the remediation makes the leaking process miss a scrape.
    "memory_leak": frozenset(
        {"replica_memory_bytes", "replica_memory_headroom_bytes", "scrape_up"}
    ),
    "nats_cpu": frozenset(
        {
            "append_latency_p99_s", "bet_latency_p99_s", "bets_per_s", "replica_lag_entries",
            "nats_server_reachable", "nats_server_response_s", "nats_server_stalled_ratio",
            "nats_stream_replicas_lagging",
            "scrape_up",
            "IronbookNatsServerDown", "IronbookNatsServerUnhealthy", "IronbookNoLedgerLeader",
            "IronbookLedgerLeaderFlapping", "IronbookBetLatencyBudgetBurn",
            "IronbookReplicaLagging",
        }
    ),
    "replica_stall": frozenset(
        {
            "replica_lag_entries", "replica_loop_stalled_ratio", "scrape_up",
            "IronbookReplicaDown", "IronbookReplicaStale", "IronbookReplicaStalling",
            "IronbookReplicaLagging",
        }
    ),
}  # fmt: skip
"""The series (watcher) and alert names (rules) a fault explains: an alert on
anything else during a fault is false, as in calm."""


def evaluate(
    faults: Sequence[FaultRecord],
    alerts: Sequence[tuple[float, str]],
    start_s: float,
    end_s: float,
) -> dict[str, Any]:
    """precision, recall, median lead time and false alerts per hour of one
    source of (start time, series or alert name) alerts (see the module's
    docstring)."""

    def owner(t: float, what: str) -> FaultRecord | None:
        return next(
            (
                f
                for f in faults
                if f.started_s <= t <= f.ended_s + GRACE_S and what in EXPLAINED_BY[f.kind]
            ),
            None,
        )

    counted = [(t, what) for t, what in alerts if start_s <= t <= end_s]
    first: dict[int, float] = {}
    true = 0
    for t, what in sorted(counted):
        fault = owner(t, what)
        if fault is not None:
            true += 1
            first.setdefault(id(fault), t)
    leads = {
        f.kind: round(f.breach_s - first[id(f)], 1)
        for f in faults
        if id(f) in first and f.breach_s is not None
    }
    faulty_s = sum(min(f.ended_s + GRACE_S, end_s) - f.started_s for f in faults)
    calm_s = max(end_s - start_s - faulty_s, 1.0)
    return {
        "alerts": len(counted),
        "precision": round(true / len(counted), 3) if counted else None,
        "recall": round(len(first) / len(faults), 3) if faults else None,
        "detected": [f.kind for f in faults if id(f) in first],
        "lead_time_s_median": round(statistics.median(leads.values()), 1) if leads else None,
        "lead_times_s": leads,
        "false_alerts_per_hour": round((len(counted) - true) / (calm_s / 3600), 2),
        "calm_s": round(calm_s),
    }


def remediation_report(
    faults: Sequence[FaultRecord],
    records: Sequence[RemediationRecord],
    mode: str,
    start_s: float,
) -> dict[str, Any]:
    """Every action, and per detector family (and for all of them) the share
    of the remediable faults an action healed before their breach (see the
    module's docstring). A dry run's decisions took no effect: their share
    is `decided_before_breach`."""
    remediable = [f for f in faults if f.kind in HEALED_BY]
    dry = mode == "dry-run"

    def effect_s(record: RemediationRecord) -> float | None:
        return record.decided_at_s if dry else record.done_at_s

    def healed(fault: FaultRecord, family: str | None) -> bool:
        times = [
            t
            for r in records
            if r.target == fault.target
            and r.action in HEALED_BY[fault.kind]
            and (family is None or r.detector == family)
            and (t := effect_s(r)) is not None
            and fault.started_s <= t <= fault.ended_s + GRACE_S
        ]
        breach = math.inf if fault.breach_s is None else fault.breach_s
        return bool(times) and min(times) < breach

    def share(family: str | None) -> float | None:
        if not remediable or mode == "off":
            return None
        return round(sum(healed(f, family) for f in remediable) / len(remediable), 3)

    name = "decided_before_breach" if dry else "healed_before_breach"
    return {
        "mode": mode,
        "actions": [
            {
                "at_s": round(r.decided_at_s - start_s, 1),
                "took_s": None if r.done_at_s is None else round(r.done_at_s - r.decided_at_s, 1),
                "action": r.action,
                "target": r.target,
                "detector": r.detector,
                "series": r.series,
                "outcome": r.outcome[:300],
            }
            for r in records
        ],
        "remediable_faults": [f.kind for f in remediable],
        name: share(None),
        f"{name}_by_detector": {family: share(family) for family in DETECTORS},
        "healed": [f.kind for f in remediable if mode != "off" and healed(f, None)],
    }


@dataclass
class Rig:
    cluster: LocalCluster
    mount: Path
    leaker: ChildProcess
    leak_port: int
    replica_addresses: dict[str, str]
    """Each replica's scrape address -> its node id (fixed: a restarted
    replica serves its metrics where the old one did)."""
    tally: Tally
    findings: list[Finding] = field(default_factory=list)

    def now(self) -> float:
        return time.time()

    def bettor_p99_ms(self, over_s: float) -> tuple[float, int]:
        """The bettor's p99 latency over the bets completed in the last
        `over_s`, and how many there were."""
        since = time.monotonic() - over_s
        latencies = sorted(
            (done - sent) * 1000
            for sent, done, _ in self.tally.completions[-5_000:]
            if done >= since
        )
        if not latencies:
            return 0.0, 0
        return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], len(latencies)


async def _disk_fill(rig: Rig, fault: FaultRecord, max_s: float) -> None:
    target = rig.mount / "fill"
    fault.target = str(rig.mount)
    fault.breach_rule = f"less than {DISK_BREACH_FREE:.0%} of the filesystem free"
    chunk = b"\xa5" * int(fault.size * _STEP_S)

    def grow(out: BinaryIO) -> bool:
        """One step's bytes written and synced; True once the breach is reached."""
        out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
        usage = shutil.disk_usage(rig.mount)
        return usage.free < DISK_BREACH_FREE * usage.total

    # The file's I/O runs off the event loop, which the supervisor, the
    # watcher and the remediator share: a slow sync must not stall them.
    with target.open("wb") as out:
        while rig.now() - fault.started_s < max_s:
            if await asyncio.to_thread(grow, out):
                fault.breach_s = rig.now()
                break
            await asyncio.sleep(_STEP_S)
    await asyncio.to_thread(target.unlink)


async def _memory_leak(rig: Rig, fault: FaultRecord, max_s: float) -> None:
    fault.target = LEAKER
    fault.breach_rule = f"resident memory at {MEMORY_LIMIT_BYTES // MiB} MiB"
    leaker = rig.leaker
    await leaker.tell(f"grow {int(fault.size)}".encode())
    try:
        while rig.now() - fault.started_s < max_s:
            if rig.leaker is not leaker:
                fault.healed_s = rig.now()
                break
            stat = process_stat(leaker.pid)
            if stat is not None and stat.rss_bytes >= MEMORY_LIMIT_BYTES:
                fault.breach_s = rig.now()
                break
            await asyncio.sleep(_STEP_S)
    finally:
        if rig.leaker is leaker:
            await leaker.tell(b"free")


async def _duty_cycle(
    process: ManagedProcess,
    fault: FaultRecord,
    max_s: float,
    *,
    period_s: float,
    share: Callable[[float], float],
    breached: Callable[[float], bool],
    healed: Callable[[], bool],
    ends_after_heal_s: float,
) -> None:
    """SIGSTOP for `share(elapsed)` of every `period_s` until `breached(stopped_for_s)`,
    or `ends_after_heal_s` after `healed()` (the process it started with
    replaced: a restart, never stopped again)."""
    pid = process.pid

    def ours() -> bool:
        """Still the process the fault started on (not killed, not restarted)."""
        return process.pid == pid and process.is_running()

    def heal_seen() -> bool:
        if fault.healed_s is None and (not ours() or healed()):
            fault.healed_s = time.time()
        return fault.healed_s is not None

    def over() -> bool:
        if fault.breach_s is not None or time.time() - fault.started_s >= max_s:
            return True
        return heal_seen() and time.time() - (fault.healed_s or 0.0) >= ends_after_heal_s

    try:
        while not over():
            stop_s = share(time.time() - fault.started_s) * period_s
            if ours():
                process.pause()
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < stop_s and ours():
                await asyncio.sleep(0.02)
                if ours() and breached(time.monotonic() - stopped_at):
                    fault.breach_s = time.time()
                    break
            if ours():
                process.resume()
            run_until = time.monotonic() + period_s - stop_s
            while time.monotonic() < run_until and fault.breach_s is None:
                await asyncio.sleep(0.02)
                if breached(0.0):
                    fault.breach_s = time.time()
    finally:
        if ours():
            process.resume()


async def _leader_moved_off(rig: Rig, node: str, stream: str, moved: asyncio.Event) -> None:
    """Sets `moved` once the servers other than `node` see another leader of `stream`."""
    others = [n for n in rig.cluster.nats.nodes.values() if n.name != node]

    def seen_elsewhere() -> bool:
        for other in others:
            status, body = other.monitor("/jsz?accounts=true&streams=true")
            if status != 200 or not isinstance(body, dict):
                continue
            for account in body.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader and leader != node:
                        return True
        return False

    while True:
        if await asyncio.to_thread(seen_elsewhere):
            moved.set()
            return
        await asyncio.sleep(0.25)


async def _nats_cpu(rig: Rig, fault: FaultRecord, max_s: float) -> None:
    leader = rig.cluster.nats.stream_leader("LEDGER_0") or "n1"
    fault.target = leader
    calm_p99_ms, _ = rig.bettor_p99_ms(CALM_LATENCY_S)
    threshold_ms = max(LATENCY_BREACH_MS, 2 * calm_p99_ms)
    fault.breach_rule = f"bettor p99 over {BREACH_WINDOW_S:g} s above {threshold_ms:.0f} ms"

    def breached(_: float) -> bool:
        p99_ms, count = rig.bettor_p99_ms(BREACH_WINDOW_S)
        return count >= BREACH_MIN_BETS and p99_ms > threshold_ms

    moved = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        watching = group.create_task(_leader_moved_off(rig, leader, "LEDGER_0", moved))
        try:
            await _duty_cycle(
                rig.cluster.nats.nodes[leader].process,
                fault,
                max_s,
                period_s=1.0,
                share=lambda elapsed: min(0.9, 0.05 + 0.85 * elapsed / fault.size),
                breached=breached,
                healed=moved.is_set,
                ends_after_heal_s=HEAL_CONFIRM_S,
            )
        finally:
            watching.cancel()


async def _replica_stall(rig: Rig, fault: FaultRecord, max_s: float) -> None:
    beats = await collect_heartbeats(rig.cluster.ops, listen_ms=1_500)
    follower = next(b.node_id for b in beats.values() if b.role == "follower")
    fault.target = follower
    fault.breach_rule = f"{follower} stopped for {STALL_BREACH_S:g} s"
    await _duty_cycle(
        rig.cluster.replicas[follower],
        fault,
        max_s,
        period_s=4.0,
        share=lambda elapsed: min(1.0, 0.1 + 0.9 * elapsed / fault.size),
        breached=lambda stopped_s: stopped_s >= STALL_BREACH_S,
        healed=lambda: False,
        ends_after_heal_s=0.0,
    )


INJECTORS: dict[str, Callable[[Rig, FaultRecord, float], Awaitable[None]]] = {
    "disk_fill": _disk_fill,
    "memory_leak": _memory_leak,
    "nats_cpu": _nats_cpu,
    "replica_stall": _replica_stall,
}


async def _inject(rig: Rig, plan: list[PlannedFault], max_fault_s: float) -> list[FaultRecord]:
    records = []
    for planned in plan:
        log(f"calm for {planned.calm_s:.0f} s")
        await asyncio.sleep(planned.calm_s)
        record = FaultRecord(planned.kind, planned.size, started_s=time.time())
        log(f"fault {planned.kind} (size {planned.size:g})")
        await INJECTORS[planned.kind](rig, record, max_fault_s)
        record.ended_s = time.time()
        breach = (
            "no breach"
            if record.breach_s is None
            else f"breach after {record.breach_s - record.started_s:.1f} s"
        )
        healed = (
            ""
            if record.healed_s is None
            else f", target healed after {record.healed_s - record.started_s:.1f} s"
        )
        log(f"  ended after {record.ended_s - record.started_s:.1f} s, {breach}{healed}")
        records.append(record)
        await asyncio.sleep(RECOVERY_S)
    return records


def _rule_alert_starts(
    prometheus_url: str, start_s: float, end_s: float
) -> list[tuple[str, float]]:
    """(alertname, start) of every firing episode of the rules in Prometheus."""
    query = urllib.parse.urlencode(
        {"query": 'ALERTS{alertstate="firing"}', "start": start_s - 60, "end": end_s, "step": 1}
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{query}", timeout=30) as r:
        series = json.load(r)["data"]["result"]
    starts = []
    for item in series:
        previous = None
        for at, _ in item["values"]:
            t = float(at)
            if previous is None or t - previous > 2.5:
                starts.append((item["metric"]["alertname"], t))
            previous = t
    return starts


@contextlib.contextmanager
def _loop_filesystem(directory: Path) -> Any:
    """A small ext2 filesystem mounted at `directory/disk`, its image in
    /dev/shm (memory): filling it never fills the machine's own disk."""
    mount = directory / "disk"
    mount.mkdir()
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-detect-", dir=SHM) as shm:
        image = Path(shm) / "disk.img"
        with image.open("wb") as out:
            out.truncate(DISK_BYTES)
        subprocess.run(["mkfs.ext2", "-q", "-F", "-m", "0", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=False)


class _BenchActions(LocalClusterActions):
    """The cluster's own actions, and the leaking process as one more
    replica (at its scrape address), restarted as a replica would be: told
    to end (it closes its stdin), then started again on the same port."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig.cluster)
        self._rig = rig

    async def resolve(self, locator: Locator) -> str | None:
        if locator == ("replica", f"{LOOPBACK}:{self._rig.leak_port}"):
            return LEAKER
        kind, value = locator
        if kind == "replica" and value in self._rig.replica_addresses:
            return self._rig.replica_addresses[value]
        return await super().resolve(locator)

    def unavailable(self, action: ActionKind, target: str) -> str | None:
        if target == LEAKER:
            return None if action == "restart_replica" else f"{LEAKER} is only restarted"
        return super().unavailable(action, target)

    async def perform(self, action: ActionKind, target: str, reason: str) -> str:
        if target != LEAKER:
            return await super().perform(action, target, reason)
        old = self._rig.leaker
        stdin = old.process.stdin
        if stdin is not None:
            stdin.close()
        try:
            await old.result(timeout_s=10.0)
        except (RuntimeError, TimeoutError, ValueError):
            old.kill()
        new = await ChildProcess.start("ironbook.benchmarks.detect_leak", str(self._rig.leak_port))
        await new.wait_ready()
        self._rig.leaker = new
        return f"{LEAKER} restarted (pid {old.pid} -> {new.pid})"


async def _measure(
    cluster: LocalCluster,
    directory: Path,
    mount: Path,
    replica_addresses: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    await cluster.wait_leaders(timeout_ms=120_000)
    ports = PortLease()
    exporter_port, node_port, leak_port = ports.take(3)
    monitor_urls = ",".join(node.monitor_url for node in cluster.nats.nodes.values())
    exporter = ManagedProcess(
        "nats-exporter",
        [
            *process_command("nats-exporter", []),
            "--monitor-urls",
            monitor_urls,
            "--port",
            str(exporter_port),
        ],
        log_path=directory / "logs" / "nats-exporter.log",
    )
    node_exporter = ManagedProcess(
        "node-exporter",
        [
            binary("prometheus-node-exporter", "node_exporter"),
            f"--web.listen-address={LOOPBACK}:{node_port}",
            "--collector.disable-defaults",
            "--collector.filesystem",
            f"--collector.filesystem.fs-types-exclude={_ONLY_EXT2}",
        ],
        log_path=directory / "logs" / "node-exporter.log",
    )
    leaker = await ChildProcess.start("ironbook.benchmarks.detect_leak", str(leak_port))
    prometheus = LocalPrometheus(
        directory / "prometheus",
        {
            "ironbook-replica": [*replica_addresses, f"{LOOPBACK}:{leak_port}"],
            "ironbook-nats-exporter": [f"{LOOPBACK}:{exporter_port}"],
            "node": [f"{LOOPBACK}:{node_port}"],
        },
        rule_files=[THRESHOLD_RULES],
    )
    rig = Rig(cluster, mount, leaker, leak_port, replica_addresses, Tally())
    settings = WatchSettings(
        prometheus_url=prometheus.url,
        forecast_horizon_s=FORECAST_HORIZON_S,
        replica_memory_limit_bytes=MEMORY_LIMIT_BYTES,
    )
    try:
        exporter.start()
        node_exporter.start()
        await leaker.wait_ready()
        prometheus.start()
        client = await connect_bench_client(cluster, max_batch_commands=64)
        accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
        await set_up(client, accounts, "detect")
        remediator = None
        if args.remediation != "off":
            remediator = Remediator(
                _BenchActions(rig), Limits(dry_run=args.remediation == "dry-run")
            )

        def found(finding: Finding) -> None:
            rig.findings.append(finding)
            if remediator is not None:
                remediator.offer(finding)

        watcher = Watcher(
            watched_series(settings),
            watch_config(settings),
            Prometheus(settings.prometheus_url, settings.query_timeout_ms / 1000),
            _Kept(),
            on_finding=found,
            resend=False,
        )
        plan = plan_faults(args.seed, args.faults, args.seconds)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            bettor = group.create_task(
                drive(client, accounts, concurrency=BETTORS, seconds=10**6, seed=args.seed,
                      run_tag="detect", pause_s=BET_PAUSE_S, tally=rig.tally)
            )  # fmt: skip
            watching = group.create_task(run(watcher, settings.interval_ms / 1000, stop))
            supervising = group.create_task(cluster.supervisor.run(stop))
            if remediator is not None:
                group.create_task(remediator.run(stop))
            log(f"warm-up {WARMUP_S:.0f} s (the detectors learn the calm)")
            await asyncio.sleep(WARMUP_S)
            start_s = time.time()
            faults = await _inject(rig, plan, args.fault_seconds)
            end_s = time.time()
            stop.set()
            await watching
            await supervising
            bettor.cancel()
        await client.close()
        rules = _rule_alert_starts(prometheus.url, start_s, end_s)
    finally:
        prometheus.close()
        rig.leaker.kill()
        exporter.stop()
        node_exporter.stop()
        ports.release()
    firing = [f for f in rig.findings if f.state == "firing"]
    sources = {
        name: [(f.at_s, f.series) for f in firing if f.detector == name] for name in DETECTORS
    }
    sources["watch"] = [(f.at_s, f.series) for f in firing]
    sources["threshold_rules"] = [(t, name) for name, t in rules]
    return {
        "faults": [
            {
                **asdict(f),
                "breach_after_s": None
                if f.breach_s is None
                else round(f.breach_s - f.started_s, 1),
            }
            for f in faults
        ],
        "detectors": {
            name: evaluate(faults, starts, start_s, end_s) for name, starts in sources.items()
        },
        "alerts": {
            "watch": [
                {"at_s": round(f.at_s - start_s, 1), "detector": f.detector, "series": f.series}
                for f in firing
                if start_s <= f.at_s <= end_s
            ],
            "threshold_rules": [
                {"at_s": round(t - start_s, 1), "alertname": name}
                for name, t in rules
                if start_s <= t <= end_s
            ],
        },
        "remediation": remediation_report(
            faults,
            [] if remediator is None else list(remediator.records),
            args.remediation,
            start_s,
        ),
        "bets": rig.tally.accepted,
        "duration_s": round(end_s - start_s, 1),
    }


class _Kept:
    """The run's alerts stay here: the evaluation reads the findings."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        self.alerts.extend(alerts)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-detect-") as tmp:
        directory = Path(tmp)
        with _loop_filesystem(directory) as mount:
            cluster = LocalCluster(directory / "cluster", partitions=1)
            ports = PortLease()
            replica_addresses = {}
            for node_id, process in cluster.replicas.items():
                (port,) = ports.take(1)
                process.set_env("IRONBOOK_REPLICA_METRICS_PORT", str(port))
                replica_addresses[f"{LOOPBACK}:{port}"] = node_id
            try:
                cluster.start()
                result = eventloop.run(_measure(cluster, directory, mount, replica_addresses, args))
            finally:
                cluster.stop()
                ports.release()
    return {
        "benchmark": "detect",
        "command": command_line(),
        "machine": machine_info(load_at_start),
        "seed": args.seed,
        "settings": {
            "forecast_horizon_s": FORECAST_HORIZON_S,
            "replica_memory_limit_bytes": MEMORY_LIMIT_BYTES,
            "disk_bytes": DISK_BYTES,
            "grace_s": GRACE_S,
            "warmup_s": WARMUP_S,
            "remediation": args.remediation,
            "nats_cpu_breach_window_s": BREACH_WINDOW_S,
        },
        **result,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ironbook bench detect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=11, help="fault order, sizes and calm stretches")
    p.add_argument(
        "--faults",
        type=lambda text: [kind.strip() for kind in text.split(",") if kind.strip()],
        default=list(FAULT_KINDS),
        help=f"comma-separated fault kinds (default: {','.join(FAULT_KINDS)})",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="calm stretch before each fault")
    p.add_argument("--fault-seconds", type=float, default=90.0, help="longest a fault lasts")
    p.add_argument(
        "--remediation",
        choices=REMEDIATION_MODES,
        default="live",
        help="act on the findings (live, the default), decide only (dry-run), or only detect",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = set(args.faults) - set(FAULT_KINDS)
    if unknown or not args.faults:
        p.error(f"--faults: choose among {', '.join(FAULT_KINDS)}")
    if os.geteuid() != 0:
        p.error("the disk fault loop-mounts a filesystem: run as root")
    result = run_bench(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0
