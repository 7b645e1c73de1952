"""The remediation policy without a cluster: each finding asks for its action
(or for none, with the reason), the per-target cooldown and the hourly cap
hold actions back, a dry run records and notes what it would do and does
nothing, a failed action is recorded as failed, and every action's event
kind is one the publishing identity may publish."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ironbook.adapters.audit.events import event_subject
from ironbook.services import cluster_events
from ironbook.services.detect import DetectorName, Finding, Labels
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.nats_identities import identities
from ironbook.services.remediate import (
    ACTIONS,
    ACTOR,
    ActionKind,
    Budget,
    Limits,
    LocalClusterActions,
    Locator,
    Proposal,
    Refusal,
    RemediationError,
    Remediator,
    event_kind,
    propose,
)
from ironbook.services.supervisor import Child

REPLICA = (("instance", "127.0.0.1:9101"), ("job", "ironbook-replica"), ("name", "p0-r2"))


def _finding(
    series: str,
    labels: Labels = (),
    *,
    state: str = "firing",
    detector: DetectorName = "windowed_gaussian",
    at_s: float = 1_000.0,
) -> Finding:
    forecasting = detector == "forecast"
    return Finding(
        "firing" if state == "firing" else "resolved",
        detector,
        series,
        labels,
        at_s,
        value=12.5,
        score=None if forecasting else 0.99999,
        forecast_s=42.0 if forecasting else None,
    )


@pytest.mark.parametrize(
    ("series", "labels", "detector", "action", "locator"),
    [
        ("replica_memory_headroom_bytes", REPLICA, "forecast", "restart_replica",
         ("replica", "p0-r2")),
        ("replica_memory_headroom_bytes", (("instance", "127.0.0.1:9", ),), "forecast",
         "restart_replica", ("replica", "127.0.0.1:9")),
        ("scrape_up", REPLICA, "half_space_trees", "kill_restart", ("replica", "p0-r2")),
        ("replica_loop_stalled_ratio", REPLICA, "windowed_gaussian", "kill_restart",
         ("replica", "p0-r2")),
        ("nats_server_reachable", (("name", "n2"), ("server", "127.0.0.1:8222")),
         "windowed_gaussian", "move_nats_leaders", ("nats_server", "n2")),
        ("nats_server_reachable", (("server", "127.0.0.1:8222"),), "windowed_gaussian",
         "move_nats_leaders", ("nats_server", "127.0.0.1:8222")),
        ("nats_server_stalled_ratio", (("server", "127.0.0.1:8222"),), "half_space_trees",
         "move_nats_leaders", ("nats_server", "127.0.0.1:8222")),
        ("append_latency_p99_s", (("partition", "1"),), "half_space_trees",
         "move_nats_leaders", ("partition", "1")),
    ],
)  # fmt: skip
def test_each_finding_asks_for_its_action(
    series: str, labels: Labels, detector: DetectorName, action: str, locator: Locator
) -> None:
    proposal = propose(_finding(series, labels, detector=detector))
    assert isinstance(proposal, Proposal)
    assert (proposal.action, proposal.locator) == (action, locator)
    assert proposal.evidence.series == series
    text = proposal.evidence.text()
    assert series in text and detector in text
    assert ("forecast 42.0 s" in text) == (detector == "forecast")
    assert ("score 0.99999" in text) == (detector != "forecast")


@pytest.mark.parametrize(
    ("finding", "why"),
    [
        (_finding("disk_free_bytes", (("mountpoint", "/data"),), detector="forecast"),
         "page only"),
        (_finding("jetstream_storage_free_bytes", (("server", "a"),), detector="forecast"),
         "page only"),
        (_finding("scrape_up", (("job", "ironbook-gateway"), ("instance", "x"))),
         "the supervisor watches it"),
        (_finding("scrape_up", (("job", "ironbook-replica"),)), "no replica named"),
        (_finding("replica_loop_stalled_ratio", (("job", "ironbook-gateway"), ("instance", "x"))),
         "the supervisor watches it"),
        (_finding("append_latency_p99_s", (("partition", "zero"),)), "no partition"),
        (_finding("append_latency_p99_s"), "no partition"),
        (_finding("nats_server_reachable"), "no NATS server named"),
        (_finding("bets_per_s"), "no automatic action"),
        (_finding("nats_server_response_s", (("name", "n2"),)), "no automatic action"),
        (_finding("no_such_series", REPLICA), "no automatic action"),
        (_finding("scrape_up", REPLICA, state="resolved"), "resolved"),
    ],
)  # fmt: skip
def test_other_findings_are_refused_with_a_reason(finding: Finding, why: str) -> None:
    refusal = propose(finding)
    assert isinstance(refusal, Refusal)
    assert why in refusal.reason


def test_one_action_per_target_within_the_cooldown() -> None:
    budget = Budget(Limits(cooldown_s=300.0, max_per_hour=100))
    assert budget.admit("p0-r2", 1_000.0) is None
    budget.spend("p0-r2", 1_000.0)
    refusal = budget.admit("p0-r2", 1_299.0)
    assert refusal is not None and "cooldown" in refusal.reason
    assert budget.admit("n1", 1_001.0) is None
    assert budget.admit("p0-r2", 1_300.0) is None


def test_the_hourly_cap_holds_across_targets() -> None:
    budget = Budget(Limits(cooldown_s=0.0, max_per_hour=2))
    for t, target in ((0.0, "a"), (10.0, "b")):
        assert budget.admit(target, t) is None
        budget.spend(target, t)
    refusal = budget.admit("c", 20.0)
    assert refusal is not None and "cap" in refusal.reason
    assert budget.admit("c", 3_599.0) is not None
    assert budget.admit("c", 3_600.0) is None  # the first action left the hour


@dataclass
class _Cluster:
    """Actions on a pretend cluster: every call recorded, nothing done."""

    known: dict[Locator, str] = field(
        default_factory=lambda: {
            ("replica", "p0-r2"): "p0-r2",
            ("partition", "0"): "n3",
            ("nats_server", "n3"): "n3",
        }
    )
    held: set[str] = field(default_factory=set)
    failing: bool = False
    performed: list[tuple[ActionKind, str]] = field(default_factory=list)

    async def resolve(self, locator: Locator) -> str | None:
        return self.known.get(locator)

    def unavailable(self, action: ActionKind, target: str) -> str | None:
        return f"{target} is held" if target in self.held else None

    async def perform(self, action: ActionKind, target: str, reason: str) -> str:
        if self.failing:
            raise RemediationError("the stepdown was refused")
        self.performed.append((action, target))
        return f"{action} {target}"


@dataclass
class _Clock:
    now_s: float = 1_000.0

    def __call__(self) -> float:
        return self.now_s


Noted = tuple[str, str, str, str, str]


def _remediator(
    cluster: _Cluster, limits: Limits, clock: _Clock | None = None
) -> tuple[Remediator, list[Noted]]:
    noted: list[Noted] = []

    def note(
        kind: str,
        actor: str,
        reason: str,
        target: str,
        detail: str = "",
        *,
        msg_id: str | None = None,
    ) -> None:
        noted.append((kind, actor, reason, target, detail))

    return Remediator(cluster, limits, note, clock or _Clock()), noted


def test_an_action_is_done_once_recorded_and_noted_then_cooled_down() -> None:
    cluster = _Cluster()
    clock = _Clock()
    remediator, noted = _remediator(cluster, Limits(cooldown_s=300.0), clock)
    memory = _finding("replica_memory_headroom_bytes", REPLICA, detector="forecast")
    record = asyncio.run(remediator.handle(memory))
    assert record is not None
    assert (record.action, record.target, record.dry_run) == ("restart_replica", "p0-r2", False)
    assert record.done_at_s == clock.now_s and record.outcome.startswith("done")
    assert cluster.performed == [("restart_replica", "p0-r2")]
    ((kind, actor, reason, target, detail),) = noted
    assert (kind, actor, target) == ("remediation_restart_replica", ACTOR, "p0-r2")
    assert "memory" in reason
    assert "replica_memory_headroom_bytes" in detail and "forecast 42.0 s" in detail
    # The same replica again (another detector, a kill this time): cooled down.
    clock.now_s += 299.0
    assert asyncio.run(remediator.handle(_finding("scrape_up", REPLICA))) is None
    assert len(cluster.performed) == 1 and len(noted) == 1
    clock.now_s += 1.0
    assert asyncio.run(remediator.handle(_finding("scrape_up", REPLICA))) is not None
    assert cluster.performed[-1] == ("kill_restart", "p0-r2")


def test_a_dry_run_records_and_notes_what_it_would_do_and_does_nothing() -> None:
    cluster = _Cluster()
    remediator, noted = _remediator(cluster, Limits(dry_run=True))
    slow = _finding("append_latency_p99_s", (("partition", "0"),))
    record = asyncio.run(remediator.handle(slow))
    assert record is not None
    assert (record.action, record.target, record.dry_run) == ("move_nats_leaders", "n3", True)
    assert record.done_at_s is None and record.outcome == "dry run: not done"
    assert cluster.performed == []
    assert [(k, t) for k, _, _, t, _ in noted] == [("remediation_move_nats_leaders", "n3")]
    assert "dry run: not done" in noted[0][4]
    # The budget is spent as it would be: the server's next finding is held back.
    again = _finding("nats_server_reachable", (("name", "n3"),))
    assert asyncio.run(remediator.handle(again)) is None


def test_a_failed_action_is_recorded_as_failed() -> None:
    cluster = _Cluster(failing=True)
    remediator, noted = _remediator(cluster, Limits())
    record = asyncio.run(remediator.handle(_finding("nats_server_reachable", (("name", "n3"),))))
    assert record is not None and record.done_at_s is None
    assert record.outcome == "failed: the stepdown was refused"
    assert "failed" in noted[0][4]


def test_unknown_held_and_unnamed_targets_are_left_alone() -> None:
    cluster = _Cluster(held={"p0-r2"})
    remediator, noted = _remediator(cluster, Limits())
    findings = [
        _finding("scrape_up", REPLICA),  # held by maintenance
        _finding("scrape_up", (("job", "ironbook-replica"), ("name", "p9-r9"))),  # not here
        _finding("disk_free_bytes", (("mountpoint", "/"),), detector="forecast"),  # page only
        _finding("append_latency_p99_s", (("partition", "-1"),)),  # not a partition
    ]
    assert [asyncio.run(remediator.handle(f)) for f in findings] == [None] * 4
    assert cluster.performed == [] and noted == [] and list(remediator.records) == []


def test_offered_findings_are_acted_on_by_the_running_remediator() -> None:
    cluster = _Cluster()
    remediator, _ = _remediator(cluster, Limits())

    async def scenario() -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(remediator.run(stop))
            remediator.offer(_finding("scrape_up", REPLICA, state="resolved"))
            remediator.offer(_finding("scrape_up", REPLICA))
            remediator.offer(_finding("append_latency_p99_s", (("partition", "0"),)))
            async with asyncio.timeout(10):
                while True:
                    if len(cluster.performed) >= 2:
                        break
                    await asyncio.sleep(0.01)
            stop.set()

    asyncio.run(scenario())
    assert cluster.performed == [("kill_restart", "p0-r2"), ("move_nats_leaders", "n3")]


@dataclass
class _BrokenCluster(_Cluster):
    """Resolving the first target fails in a way no action foresaw."""

    broken_once: bool = True
    acted: asyncio.Event = field(default_factory=asyncio.Event)

    async def resolve(self, locator: Locator) -> str | None:
        if self.broken_once:
            self.broken_once = False
            raise RuntimeError("p0-r2 is already running")
        return await super().resolve(locator)

    async def perform(self, action: ActionKind, target: str, reason: str) -> str:
        done = await super().perform(action, target, reason)
        self.acted.set()
        return done


def test_an_unforeseen_failure_is_logged_and_the_remediator_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = _BrokenCluster()
    remediator, _ = _remediator(cluster, Limits())

    async def scenario() -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(remediator.run(stop))
            remediator.offer(_finding("scrape_up", REPLICA))
            remediator.offer(_finding("append_latency_p99_s", (("partition", "0"),)))
            await asyncio.wait_for(cluster.acted.wait(), timeout=10)
            stop.set()

    asyncio.run(scenario())
    assert cluster.performed == [("move_nats_leaders", "n3")]
    assert "already running" in caplog.text


def test_every_action_is_an_event_kind_the_supervisor_identity_may_publish() -> None:
    kinds = {event_kind(action) for action in ACTIONS}
    assert kinds == set(cluster_events.WATCH_REMEDIATIONS)
    allowed = identities(partitions=1)["supervisor"].publish
    for kind in kinds:
        assert kind in cluster_events.KINDS
        assert event_subject(kind) in allowed


def test_no_action_while_an_operator_operation_holds_the_cluster(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    actions = LocalClusterActions(cluster)

    async def scenario() -> tuple[str | None, str | None]:
        async with cluster.operations:
            during = actions.unavailable("kill_restart", "p0-r1")
        return during, actions.unavailable("kill_restart", "p0-r1")

    during, after = asyncio.run(scenario())
    assert during is not None and "under way" in during
    assert after is None or "under way" not in after


class _RunningProcess:
    """The part of a supervised process the actions look at: it runs."""

    pid = 4242

    def is_running(self) -> bool:
        return True


def _supervise_replicas(
    cluster: LocalCluster, ages_s: dict[str, float], down: frozenset[str] = frozenset()
) -> None:
    """Partition 0's replicas as supervised children, each started `ages_s`
    seconds ago; those in `down` not running."""
    now = time.monotonic()
    for name, age_s in ages_s.items():
        process = _StoppedProcess() if name in down else _RunningProcess()
        cluster.supervisor.children[name] = Child(
            name,
            process,  # type: ignore[arg-type]
            start=lambda: None,
            started_at=now - age_s,
        )


class _StoppedProcess(_RunningProcess):
    def is_running(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("ages_s", "down", "target", "why"),
    [
        ({"p0-r1": 100, "p0-r2": 100, "p0-r3": 100}, frozenset(), "p0-r2", None),
        # Killed as hung by the supervisor a moment ago: the scrapes the old
        # process missed must not kill its successor.
        ({"p0-r1": 100, "p0-r2": 3, "p0-r3": 100}, frozenset(), "p0-r2", "started 3 s ago"),
        # A peer still starting: the partition would keep one settled replica.
        ({"p0-r1": 5, "p0-r2": 100, "p0-r3": 100}, frozenset(), "p0-r2",
         "fewer than its majority of 2"),
        ({"p0-r1": 100, "p0-r2": 100, "p0-r3": 100}, frozenset({"p0-r3"}), "p0-r2",
         "fewer than its majority of 2"),
    ],
)  # fmt: skip
def test_a_replica_is_restarted_only_when_its_partition_keeps_a_settled_majority(
    tmp_path: Path,
    ages_s: dict[str, float],
    down: frozenset[str],
    target: str,
    why: str | None,
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", partitions=1)
    _supervise_replicas(cluster, ages_s, down)
    actions = LocalClusterActions(cluster, settle_s=20.0)
    for action in ("kill_restart", "restart_replica"):
        answer = actions.unavailable(action, target)
        if why is None:
            assert answer is None
        else:
            assert answer is not None and why in answer, answer
