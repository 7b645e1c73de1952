"""The supervisor on real child processes: a hung (SIGSTOPped) child is
killed by its PID and restarted, hung kills are rate limited, a child in a
crash loop is given up on while the rest keeps running, dry run only
logs, and every restart and remediation is noted as a significant event."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.services.cluster_events import watch_supervisor
from ironbook.services.process import LIVENESS_ENV
from ironbook.services.supervisor import Remediation, RestartPolicy, Supervisor

WAIT_S = 60.0
"""Bounded waits: generous, since the machine may be slow."""

SERVE_UNTIL_STOPPED = (
    "from ironbook.services.process import run_service; run_service(lambda stop: stop.wait())"
)
FAST = RestartPolicy(
    initial_backoff_ms=50,
    max_backoff_ms=200,
    check_interval_ms=50,
    hung_after_ms=1_500,
    startup_grace_ms=30_000,
    crash_loop_restarts=3,
    crash_loop_window_ms=60_000,
)


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.kill()


def _child(
    supervisor: Supervisor,
    started: list[ManagedProcess],
    tmp_path: Path,
    name: str,
    code: str,
) -> ManagedProcess:
    liveness = tmp_path / "run" / f"{name}.alive"
    process = ManagedProcess(
        name, [sys.executable, "-c", code], log_path=tmp_path / "logs" / f"{name}.log"
    )
    process.set_env(LIVENESS_ENV, str(liveness))
    supervisor.add(name, process, process.start, liveness=liveness)
    started.append(process)
    return process


def _until(what: str, supervisor: Supervisor, done: Callable[[], bool]) -> float:
    """Run supervision rounds until `done()`; the seconds it took."""
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < WAIT_S, f"timed out waiting for {what}"
        supervisor.check()
        time.sleep(FAST.check_interval_ms / 1000)
    return time.monotonic() - began


def _alive(supervisor: Supervisor, name: str) -> bool:
    """The child has touched its file since it started, recently: the hung
    limit applies to it (before its first touch the start-up grace does)."""
    silence = supervisor.silent_ms(supervisor.children[name])
    if silence is None:
        return False
    silent, limit = silence
    return limit == FAST.hung_after_ms and silent < FAST.hung_after_ms


def _running_children(
    supervisor: Supervisor, started: list[ManagedProcess], tmp_path: Path, *names: str
) -> tuple[list[ManagedProcess], list[Remediation]]:
    """Children serving until stopped, started and seen alive; and the
    remediations the supervisor reports from then on."""
    heard: list[Remediation] = []
    supervisor.on_remediation = heard.append
    children = [_child(supervisor, started, tmp_path, n, SERVE_UNTIL_STOPPED) for n in names]
    supervisor.start_all()
    for name in names:
        _until(f"{name} alive", supervisor, lambda name=name: _alive(supervisor, name))
    return children, heard


def test_a_frozen_child_is_killed_and_restarted(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    supervisor = Supervisor(FAST)
    (frozen, calm), heard = _running_children(supervisor, processes, tmp_path, "frozen", "calm")
    frozen_pid, calm_pid = frozen.pid, calm.pid
    frozen.pause()
    _until(
        "the frozen child to be replaced",
        supervisor,
        lambda: frozen.is_running() and frozen.pid != frozen_pid,
    )
    assert [(r.action, r.child, r.pid) for r in heard] == [("hung_kill", "frozen", frozen_pid)]
    assert supervisor.children["frozen"].hung_kills == 1
    assert supervisor.children["frozen"].restarts == 1
    # The new one is watched from its own start, and the calm one was never touched.
    _until("the new child to touch its file", supervisor, lambda: _alive(supervisor, "frozen"))
    assert calm.pid == calm_pid and calm.is_running()


def test_hung_kills_are_rate_limited(tmp_path: Path, processes: list[ManagedProcess]) -> None:
    supervisor = Supervisor(replace(FAST, max_remediations_per_minute=1))
    (first, second), heard = _running_children(supervisor, processes, tmp_path, "first", "second")
    first.pause()
    second.pause()
    _until("one kill and one suppressed", supervisor, lambda: len(heard) >= 2)
    for _ in range(20):  # more rounds: nothing more is done or said this minute
        supervisor.check()
        time.sleep(0.05)
    assert sorted(r.action for r in heard) == ["hung_kill", "hung_kill_suppressed"]
    killed = next(r.child for r in heard if r.action == "hung_kill")
    spared = second if killed == "first" else first
    assert spared.is_running()
    spared.resume()


def test_a_crash_loop_is_given_up_on_and_the_rest_keeps_running(
    tmp_path: Path, processes: list[ManagedProcess], caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(FAST)
    changes: list[int] = []
    supervisor.on_change = lambda: changes.append(1)
    crashing = _child(supervisor, processes, tmp_path, "crashing", "raise SystemExit(3)")
    steady = _child(supervisor, processes, tmp_path, "steady", SERVE_UNTIL_STOPPED)
    supervisor.start_all()
    steady_pid = steady.pid
    with caplog.at_level(logging.WARNING, logger="ironbook.supervisor"):
        _until(
            "the crash loop to be given up on",
            supervisor,
            lambda: supervisor.children["crashing"].gave_up,
        )
    child = supervisor.children["crashing"]
    assert child.restarts == FAST.crash_loop_restarts
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    event = json.loads(errors[0].getMessage())
    assert event["event"] == "supervisor.remediation"
    assert event["action"] == "crash_loop_give_up"
    assert event["child"] == "crashing" and event["dry_run"] is False
    for _ in range(20):  # given up: never started again
        supervisor.check()
        time.sleep(0.05)
    assert not crashing.is_running() and child.restarts == FAST.crash_loop_restarts
    statuses = {status.name: status for status in supervisor.statuses()}
    assert statuses["crashing"].state == "gave_up"
    assert statuses["steady"].state == "running" and steady.pid == steady_pid
    assert changes, "the runtime file was never asked to be rewritten"
    supervisor.revive("crashing")
    _until("a revived child to be started", supervisor, lambda: child.restarts > 3)


def test_dry_run_only_logs(tmp_path: Path, processes: list[ManagedProcess]) -> None:
    supervisor = Supervisor(replace(FAST, dry_run=True))
    heard: list[Remediation] = []
    supervisor.on_remediation = heard.append
    frozen = _child(supervisor, processes, tmp_path, "frozen", SERVE_UNTIL_STOPPED)
    crashing = _child(supervisor, processes, tmp_path, "crashing", "raise SystemExit(3)")
    supervisor.start_all()
    _until("frozen alive", supervisor, lambda: _alive(supervisor, "frozen"))
    pid = frozen.pid
    frozen.pause()
    _until(
        "both remediations decided",
        supervisor,
        lambda: {r.action for r in heard} >= {"hung_kill", "crash_loop_give_up"},
    )
    _until(
        "the crashing child restarted past its budget anyway",
        supervisor,
        lambda: supervisor.children["crashing"].restarts > FAST.crash_loop_restarts,
    )
    assert all(r.dry_run for r in heard)
    assert frozen.is_running() and frozen.pid == pid
    assert not supervisor.children["crashing"].gave_up
    assert len([r for r in heard if r.action == "hung_kill"]) == 1, "one silence, said once"
    crashing.kill()
    frozen.resume()


def test_every_restart_and_remediation_is_a_significant_event(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    supervisor = Supervisor(FAST)
    noted: list[tuple[str, str, str, str, str]] = []

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

    watch_supervisor(supervisor, note)
    frozen = _child(supervisor, processes, tmp_path, "frozen", SERVE_UNTIL_STOPPED)
    _child(supervisor, processes, tmp_path, "crashing", "raise SystemExit(3)")
    supervisor.start_all()
    _until("frozen alive", supervisor, lambda: _alive(supervisor, "frozen"))
    frozen_pid = frozen.pid
    frozen.pause()
    _until(
        "the frozen child replaced and the crash loop given up on",
        supervisor,
        lambda: (
            supervisor.children["crashing"].gave_up
            and frozen.is_running()
            and frozen.pid != frozen_pid
        ),
    )
    by_child = {
        name: [(kind, reason) for kind, actor, reason, target, _ in noted if target == name]
        for name in ("frozen", "crashing")
    }
    assert {actor for _, actor, _, _, _ in noted} == {"supervisor"}
    (kill, restart) = by_child["frozen"]
    assert kill[0] == "hung_kill" and kill[1].startswith("alive but silent")
    assert restart[0] == "process_restarted" and restart[1].startswith("killed as hung (")
    assert by_child["crashing"] == [
        *[("process_restarted", "exited with code 3")] * FAST.crash_loop_restarts,
        (
            "crash_loop_give_up",
            f"exited {FAST.crash_loop_restarts + 1} times within 60 s (last code 3); "
            "not restarting it",
        ),
    ]
    frozen_restart = next(
        detail
        for kind, _, _, target, detail in noted
        if target == "frozen" and kind == "process_restarted"
    )
    assert frozen_restart == f"pid {frozen.pid}, restart 1"


def test_a_kill_asked_by_remediation_is_restarted_with_its_reason(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    supervisor = Supervisor(FAST)
    restarted: list[tuple[str, str]] = []
    supervisor.on_restart = lambda child, why: restarted.append((child.name, why))
    stalled = _child(supervisor, processes, tmp_path, "stalled", SERVE_UNTIL_STOPPED)
    supervisor.start_all()
    _until("stalled alive", supervisor, lambda: _alive(supervisor, "stalled"))
    pid = stalled.pid
    stalled.pause()  # SIGSTOPped, well within its hung limit
    assert supervisor.kill("stalled", "its scrape is missing") == pid
    _until("a new stalled", supervisor, lambda: stalled.is_running() and stalled.pid != pid)
    assert restarted == [("stalled", "killed as hung (its scrape is missing)")]
    assert supervisor.children["stalled"].hung_kills == 1
    with supervisor.held("stalled"):
        assert supervisor.kill("stalled", "held: left alone") is None
    assert stalled.is_running()


def test_holds_nest_and_a_drain_outlasts_them(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    supervisor = Supervisor(FAST)
    _child(supervisor, processes, tmp_path, "node", SERVE_UNTIL_STOPPED)
    supervisor.start_all()
    _until("node alive", supervisor, lambda: _alive(supervisor, "node"))
    child = supervisor.children["node"]
    with supervisor.held("node"):
        with supervisor.held("node"):
            assert child.state == "held"
        # The inner block's end does not hand it back while the outer runs.
        assert child.state == "held"
        assert supervisor.kill("node", "under maintenance") is None
    assert child.state == "running"
    supervisor.set_drained("node", True)
    with supervisor.held("node"):
        pass
    assert child.state == "held"  # still drained
    supervisor.set_drained("node", False)
    assert child.state == "running"


def test_a_pause_of_supervision_itself_kills_nobody(
    tmp_path: Path, processes: list[ManagedProcess]
) -> None:
    # The host paused (or the supervisor's loop was held) longer than the
    # hung limit: every child looks silent when supervision resumes, though
    # none is hung. Silences count from the resumption, so a child that is
    # really frozen is still killed, one hung limit later.
    supervisor = Supervisor(FAST)
    (calm, frozen), heard = _running_children(supervisor, processes, tmp_path, "calm", "frozen")
    calm_pid, frozen_pid = calm.pid, frozen.pid
    calm.pause()
    frozen.pause()
    time.sleep(2 * FAST.hung_after_ms / 1000)  # no rounds meanwhile
    calm.resume()
    supervisor.check()
    assert heard == []
    _until("calm touches its file again", supervisor, lambda: _alive(supervisor, "calm"))
    _until(
        "the frozen child to be replaced",
        supervisor,
        lambda: frozen.is_running() and frozen.pid != frozen_pid,
    )
    assert [(r.action, r.child) for r in heard] == [("hung_kill", "frozen")]
    assert calm.pid == calm_pid and calm.is_running()
