"""Remediation driven by the watcher's findings (docs/watch.md, "Remediation").

Two halves:

- The policy, pure (no I/O, no clock: times come in as arguments).
  `propose(finding)` says what a firing finding asks for, or why nothing:

  | finding                                          | action              |
  |--------------------------------------------------|---------------------|
  | `replica_memory_headroom_bytes` forecast         | `restart_replica`   |
  | `scrape_up` of a replica (job ironbook-replica)  | `kill_restart`      |
  | `replica_loop_stalled_ratio` of a replica        | `kill_restart`      |
  | `nats_server_reachable` of a NATS server         | `move_nats_leaders` |
  | `nats_server_stalled_ratio` of a NATS server     | `move_nats_leaders` |
  | `append_latency_p99_s` of a partition            | `move_nats_leaders` |
  |   (off the server leading that partition's stream)                     |
  | disk, JetStream storage and state-size forecasts | page only           |

  `Budget` admits an action on a target or refuses it: one action per
  target per `cooldown_s`, at most `max_per_hour` actions in any hour.
- The effect, thin: `Remediator` takes findings (`offer`, the watcher's
  `on_finding`), runs one action at a time through `Actions` (for a local
  cluster `LocalClusterActions`: a graceful restart through
  `maintenance.restart_replica`, whose leader hands its lease over as it
  stops; a kill through the supervisor, which restarts it; stepdowns with
  placement through `maintenance.move_leaderships_off`), and notes every
  action as the significant event `remediation_<action>`, actor `watch`,
  with the reason and the evidence (series, detector, score, forecast).

In a dry run the decisions, budget included, are the same, and each is
logged and noted as an event saying it was not done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import msgspec
import nats.errors

from ironbook.adapters.audit.events import NoteEvent
from ironbook.adapters.nats.log import stream_name
from ironbook.replication.concurrency import race, wait_for
from ironbook.services import dr as dr_site
from ironbook.services import maintenance
from ironbook.services.detect import Finding, Labels
from ironbook.services.local_cluster import LocalCluster
from ironbook.settings import WatchSettings

log = logging.getLogger("ironbook.watch.remediate")

ActionKind = Literal["restart_replica", "kill_restart", "move_nats_leaders"]
ACTIONS: tuple[ActionKind, ...] = get_args(ActionKind)
ACTOR = "watch"
REPLICA_JOB = "ironbook-replica"
PAGE_ONLY = frozenset(
    {"disk_free_bytes", "jetstream_storage_free_bytes", "state_size_headroom_bytes"}
)
"""Forecasts nothing automatic can fix (freeing disk or state means deleting
someone's data): the watcher's page is the action."""
HUNG_REPLICA_SERIES = {
    "scrape_up": "replica alive but its scrape is missing",
    "replica_loop_stalled_ratio": "replica's event loop stands still off the CPU "
    "(stopped or starved) against the other replicas",
}
"""Series that say a replica is hung or stalling, and why it is killed."""
NATS_SERVER_SERIES = frozenset({"nats_server_reachable", "nats_server_stalled_ratio"})
"""Not `nats_server_response_s`: when one server is starved, the others'
monitoring endpoints answer late too (they wait on it), so a slow answer
does not say which server degrades; its stalled probes (each judged
against the quickest server of the same moment) and the partition's slow
appends do."""
QUEUE_LIMIT = 256
"""Findings waiting for the remediator at most; older ones are dropped."""
RECORDS_KEPT = 1_000
RESTARTED_TIMEOUT_S = 15.0
"""How long a kill waits for the supervisor to start the process again."""


def event_kind(action: ActionKind) -> str:
    """The significant event an action is recorded as."""
    return f"remediation_{action}"


LocatorKind = Literal["replica", "nats_server", "partition"]
Locator = tuple[LocatorKind, str]
"""What a finding points at, from its labels: a replica (its name, or its
scrape address), a NATS server (its name, or its monitoring address), or a
partition (whose stream leader is the target)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    series: str
    detector: str
    labels: Labels
    value: float
    score: float | None
    forecast_s: float | None

    def text(self) -> str:
        parts = [f"series {self.series}", f"detector {self.detector}", f"value {self.value:.6g}"]
        if self.score is not None:
            parts.append(f"score {self.score:.6g}")
        if self.forecast_s is not None:
            parts.append(f"forecast {self.forecast_s:.1f} s to exhaustion")
        if self.labels:
            parts.append(" ".join(f"{k}={v}" for k, v in self.labels))
        return "; ".join(parts)


def evidence_of(finding: Finding) -> Evidence:
    return Evidence(
        finding.series,
        finding.detector,
        finding.labels,
        finding.value,
        finding.score,
        finding.forecast_s,
    )


@dataclass(frozen=True, slots=True)
class Proposal:
    action: ActionKind
    locator: Locator
    reason: str
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


def propose(finding: Finding) -> Proposal | Refusal:
    """What `finding` asks for (see the module's table), or why nothing."""
    if finding.state != "firing":
        return Refusal("a resolved finding asks for nothing")
    labels = dict(finding.labels)
    series = finding.series
    evidence = evidence_of(finding)
    if series in PAGE_ONLY:
        return Refusal(f"{series}: page only (no automatic action frees storage)")
    if series == "replica_memory_headroom_bytes":
        replica = _replica(labels)
        if replica is None:
            return Refusal(f"{series}: no replica named in {finding.labels}")
        when = "" if finding.forecast_s is None else f" in {finding.forecast_s:.0f} s"
        return Proposal(
            "restart_replica",
            replica,
            f"replica memory forecast to reach its limit{when}",
            evidence,
        )
    if series in HUNG_REPLICA_SERIES:
        if labels.get("job") != REPLICA_JOB:
            return Refusal(f"{series} of job {labels.get('job')!r}: the supervisor watches it")
        replica = _replica(labels)
        if replica is None:
            return Refusal(f"{series}: no replica named in {finding.labels}")
        return Proposal("kill_restart", replica, HUNG_REPLICA_SERIES[series], evidence)
    if series in NATS_SERVER_SERIES:
        server = labels.get("name") or labels.get("server")
        if not server:
            return Refusal(f"{series}: no NATS server named in {finding.labels}")
        why = (
            "NATS server unreachable"
            if series == "nats_server_reachable"
            else "NATS server stalling (answers late against the others)"
        )
        return Proposal("move_nats_leaders", ("nats_server", server), why, evidence)
    if series == "append_latency_p99_s":
        partition = labels.get("partition", "")
        if not partition.isdigit():
            return Refusal(f"{series}: no partition in {finding.labels}")
        return Proposal(
            "move_nats_leaders",
            ("partition", partition),
            f"slow appends on partition {partition}: its stream's leader degrades",
            evidence,
        )
    return Refusal(f"{series}: no automatic action (the alert is the response)")


def _replica(labels: dict[str, str]) -> Locator | None:
    name = labels.get("name") or labels.get("instance")
    return None if not name else ("replica", name)


@dataclass(frozen=True, slots=True)
class Limits:
    cooldown_s: float = 300.0
    """One action per target within this."""
    max_per_hour: int = 6
    """Actions in any hour, across all targets."""
    dry_run: bool = False


def limits_of(settings: WatchSettings) -> Limits:
    return Limits(
        cooldown_s=settings.remediation_cooldown_s,
        max_per_hour=settings.remediation_max_per_hour,
        dry_run=settings.remediation_dry_run,
    )


class Budget:
    """Per-target cooldown and the hourly cap. Pure: `now_s` comes in."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._last: dict[str, float] = {}
        self._recent: deque[float] = deque()

    def admit(self, target: str, now_s: float) -> Refusal | None:
        """None if an action on `target` may happen now, else why not."""
        while self._recent and now_s - self._recent[0] >= 3_600.0:
            self._recent.popleft()
        last = self._last.get(target)
        if last is not None and now_s - last < self._limits.cooldown_s:
            return Refusal(
                f"{target} was acted on {now_s - last:.0f} s ago "
                f"(cooldown {self._limits.cooldown_s:g} s)"
            )
        if len(self._recent) >= self._limits.max_per_hour:
            return Refusal(f"{len(self._recent)} actions in the last hour already (the cap)")
        return None

    def spend(self, target: str, now_s: float) -> None:
        self._last[target] = now_s
        self._recent.append(now_s)


class RemediationError(RuntimeError):
    """An action was tried and did not complete."""


class Actions(Protocol):
    """What the remediator may do to a cluster."""

    async def resolve(self, locator: Locator) -> str | None:
        """The process a locator names (a replica's node id, a NATS server's
        name), None if there is none."""
        ...

    def unavailable(self, action: ActionKind, target: str) -> str | None:
        """Why `action` may not touch `target` now (under maintenance, not
        running), None if it may."""
        ...

    async def perform(self, action: ActionKind, target: str, reason: str) -> str:
        """Do it and return what was done; `RemediationError` if it failed."""
        ...


class RemediationRecord(msgspec.Struct, frozen=True):
    """One action decided: done, failed, or (dry run) not done."""

    action: ActionKind
    target: str
    reason: str
    evidence: str
    detector: str
    series: str
    dry_run: bool
    decided_at_s: float
    done_at_s: float | None
    """When it took effect; None in a dry run or when it failed."""
    outcome: str


class Remediator:
    """Findings in (`offer`), one action at a time out (`run`)."""

    def __init__(
        self,
        actions: Actions,
        limits: Limits,
        note: NoteEvent | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._actions = actions
        self.limits = limits
        self._budget = Budget(limits)
        self._note = note
        self._clock = clock
        self._queue: deque[Finding] = deque(maxlen=QUEUE_LIMIT)
        self._wake = asyncio.Event()
        self.records: deque[RemediationRecord] = deque(maxlen=RECORDS_KEPT)

    def offer(self, finding: Finding) -> None:
        """Take a finding (the watcher's `on_finding`); never waits."""
        if finding.state == "firing":
            self._queue.append(finding)
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Act on offered findings until `stop`; an action in progress runs to its end."""
        while not stop.is_set():
            self._wake.clear()
            while self._queue:
                finding = self._queue.popleft()
                try:
                    await self.handle(finding)
                except Exception:
                    # It runs inside `ironbook up`: one action that failed in
                    # an unforeseen way must not take the cluster's supervisor down.
                    log.exception("remediation of %s %s failed", finding.series, finding.labels)
            await race(self._wake.wait(), stop.wait())

    async def handle(self, finding: Finding) -> RemediationRecord | None:
        """Decide on one finding and act (or, in a dry run, say so); the
        record, or None when nothing is to be done."""
        proposal = propose(finding)
        if isinstance(proposal, Refusal):
            log.debug("no remediation: %s", proposal.reason)
            return None
        target = await self._actions.resolve(proposal.locator)
        if target is None:
            log.info("no remediation: %s %s is not a process here", *proposal.locator)
            return None
        why_not = self._actions.unavailable(proposal.action, target) or self._budget.admit(
            target, self._clock()
        )
        if why_not is not None:
            reason = why_not if isinstance(why_not, str) else why_not.reason
            log.info("remediation %s of %s held back: %s", proposal.action, target, reason)
            return None
        decided_at_s = self._clock()
        self._budget.spend(target, decided_at_s)
        done_at_s = None
        if self.limits.dry_run:
            outcome = "dry run: not done"
        else:
            try:
                outcome = "done: " + await self._actions.perform(
                    proposal.action, target, proposal.reason
                )
                done_at_s = self._clock()
            except RemediationError as error:
                outcome = f"failed: {error}"
        record = RemediationRecord(
            action=proposal.action,
            target=target,
            reason=proposal.reason,
            evidence=proposal.evidence.text(),
            detector=finding.detector,
            series=finding.series,
            dry_run=self.limits.dry_run,
            decided_at_s=decided_at_s,
            done_at_s=done_at_s,
            outcome=outcome,
        )
        self.records.append(record)
        line = json.dumps({"event": "watch.remediation", **msgspec.to_builtins(record)})
        (log.error if outcome.startswith("failed") else log.warning)(line)
        if self._note is not None:
            self._note(
                event_kind(proposal.action),
                actor=ACTOR,
                reason=proposal.reason,
                target=target,
                detail=f"{record.evidence}; {outcome}",
            )
        return record


_FAILURES = (maintenance.MaintenanceError, OSError, TimeoutError, nats.errors.Error)


class LocalClusterActions:
    """The actions on a `LocalCluster` run by this process (`ironbook up`)."""

    def __init__(self, cluster: LocalCluster, settle_s: float = 20.0) -> None:
        self.cluster = cluster
        self.settle_s = settle_s
        """A replica started more recently than this is not acted on, nor
        counted towards its partition's majority (see `_replicas_unsafe`)."""

    async def resolve(self, locator: Locator) -> str | None:
        kind, value = locator
        cluster = self.cluster
        if kind == "replica":
            if value in cluster.replicas:
                return value
            for target in cluster.targets.jobs.get(REPLICA_JOB, []):
                if target.address == value and target.labels.get("name") in cluster.replicas:
                    return target.labels["name"]
            return None
        if kind == "nats_server":
            return self._nats_server(value)
        return await asyncio.to_thread(cluster.nats.stream_leader_seen, stream_name(int(value)))

    def _nats_server(self, name_or_address: str) -> str | None:
        nodes = self.cluster.nats.nodes
        if name_or_address in nodes:
            return name_or_address
        for name, node in nodes.items():
            if f"{node.host}:{node.ports.http}" == name_or_address:
                return name
        return None

    def unavailable(self, action: ActionKind, target: str) -> str | None:
        if self.cluster.operations.locked():
            return "an operator's maintenance or DR operation is under way"
        return self._unavailable_now(action, target)

    def _unavailable_now(self, action: ActionKind, target: str) -> str | None:
        """`unavailable`, the operations lock aside."""
        cluster = self.cluster
        if action == "move_nats_leaders" and cluster.primary.site != dr_site.SITE_A:
            # `cluster.nats` is the fenced, sealed site A: its leaderships serve nobody.
            return "site b is primary: NATS leaderships are not moved on a promoted DR pair"
        if action == "move_nats_leaders":
            child = cluster.supervisor.children.get(f"nats-{target}")
            others = [n for n in cluster.nats.running_nodes() if n.name != target]
            if not others:
                return f"no other NATS server runs to take over from {target}"
        else:
            child = cluster.supervisor.children.get(target)
        if child is None:
            return f"{target} is not supervised here"
        if child.state in ("held", "gave_up"):
            return f"{target} is {child.state}"
        if not child.process.is_running():
            return f"{target} is not running (the supervisor restarts it)"
        if action != "move_nats_leaders":
            return self._replicas_unsafe(target)
        return None

    def _replicas_unsafe(self, target: str) -> str | None:
        """Why stopping replica `target` now could hurt, None if it cannot:
        it started less than `settle_s` ago (while a replica starts its
        scrapes are missing and it catches up, and the finding may be about
        the process it replaced: a whole host stalled, the supervisor killed
        every replica as hung, and the watcher's missed scrapes would then
        kill their successors), or without it its partition would not keep
        a majority of running, settled replicas."""
        supervisor = self.cluster.supervisor
        now = time.monotonic()

        def settled(name: str) -> bool:
            child = supervisor.children.get(name)
            return (
                child is not None
                and child.state == "running"
                and now - child.started_at >= self.settle_s
            )

        child = supervisor.children[target]
        if now - child.started_at < self.settle_s:
            return (
                f"{target} started {now - child.started_at:.0f} s ago "
                f"(left alone for {self.settle_s:g} s after a start)"
            )
        partition = next(
            (
                p
                for p in range(self.cluster.config.partitions)
                if target in self.cluster.replica_ids(p)
            ),
            None,
        )
        if partition is None:
            return None
        peers = [r for r in self.cluster.replica_ids(partition) if r != target]
        majority = (len(peers) + 1) // 2 + 1
        up = sum(settled(r) for r in peers)
        if up < majority:
            return (
                f"partition {partition} would keep {up} running, settled replicas "
                f"without {target}, fewer than its majority of {majority}"
            )
        return None

    async def perform(self, action: ActionKind, target: str, reason: str) -> str:
        async with self.cluster.operations:
            # Decided before the lock was had: what ran meanwhile (a DR
            # promotion, a drain) may have made it moot.
            why_not = self._unavailable_now(action, target)
            if why_not is not None:
                raise RemediationError(f"{action} of {target} not done: {why_not}")
            return await self._perform(action, target, reason)

    async def _perform(self, action: ActionKind, target: str, reason: str) -> str:
        try:
            if action == "restart_replica":
                return "; ".join(await maintenance.restart_replica(self.cluster, target))
            if action == "kill_restart":
                return await self._kill_restart(target, reason)
            moved = await maintenance.move_leaderships_off(
                self.cluster, target, seen_by_others=True
            )
        except _FAILURES as error:
            raise RemediationError(f"{action} of {target}: {error!r}") from error
        if not moved:
            raise RemediationError(f"{target} leads nothing the other servers know of")
        return "; ".join(moved)

    async def _kill_restart(self, target: str, reason: str) -> str:
        """SIGKILL by the supervisor (as a hung child), then wait for the
        supervisor's own restart."""
        supervisor = self.cluster.supervisor
        old_pid = supervisor.kill(target, f"{reason} (remediation by {ACTOR})")
        if old_pid is None:
            raise RemediationError(f"{target} was not running")
        process = supervisor.children[target].process

        async def restarted() -> None:
            while True:
                if process.is_running() and process.pid != old_pid:
                    return
                await asyncio.sleep(0.05)

        try:
            await wait_for(restarted(), RESTARTED_TIMEOUT_S)
        except TimeoutError as error:
            raise RemediationError(
                f"{target} killed (pid {old_pid}) but not running again "
                f"after {RESTARTED_TIMEOUT_S:g} s"
            ) from error
        return f"{target} killed (pid {old_pid}) and restarted (pid {process.pid})"
