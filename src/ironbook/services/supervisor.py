"""Keeps child processes alive: a child that dies is restarted with backoff,
a child that is alive but silent is killed and restarted, and a child that
keeps dying is given up on.

- Exited: restarted after a backoff that doubles from `initial_backoff_ms`
  to `max_backoff_ms` while the child keeps dying, and resets once it has
  stayed up for `stable_after_ms`.
- Hung: a child given a liveness file (`LIVENESS_ENV`: every ironbook
  service touches it from its event loop, `services.process`) whose file
  has not been touched for `hung_after_ms` (`startup_grace_ms` before its
  first touch) is sent SIGKILL by its PID, then restarted as an exited one.
  At most `max_remediations_per_minute` such kills happen across all
  children: when the whole machine stalls, killing everything would not help.
- Crash loop: a child that exits again after `crash_loop_restarts`
  restarts within `crash_loop_window_ms` is not restarted again; an error is logged and the
  child is reported `gave_up` until an operator restarts it (`revive`).
- Maintenance: a child `held` by a drain or a rolling restart is left alone.

With `dry_run`, hung kills and crash-loop give-ups are only logged. Every
remediation is one structured log line (`"event": "supervisor.remediation"`)
and is passed to `on_remediation`; every restart is passed to `on_restart`
with why the child was down. Only processes the supervisor started are
ever signalled, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.replication.concurrency import wait_for

log = logging.getLogger("ironbook.supervisor")

ChildState = Literal["running", "restarting", "gave_up", "held"]
RemediationAction = Literal["hung_kill", "hung_kill_suppressed", "crash_loop_give_up"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_backoff_ms: int = 250
    max_backoff_ms: int = 10_000
    stable_after_ms: int = 30_000
    check_interval_ms: int = 200
    hung_after_ms: int = 5_000
    startup_grace_ms: int = 20_000
    crash_loop_restarts: int = 5
    crash_loop_window_ms: int = 60_000
    max_remediations_per_minute: int = 6
    dry_run: bool = False


class Remediation(msgspec.Struct, frozen=True):
    """One remediation, as logged (`dry_run`: decided, not done)."""

    action: RemediationAction
    child: str
    pid: int | None
    dry_run: bool
    detail: str
    at_ms: int


class ChildStatus(msgspec.Struct, frozen=True):
    """A child as `ironbook status` shows it."""

    name: str
    pid: int | None
    state: ChildState
    restarts: int
    hung_kills: int
    last_event: str = ""


@dataclass(slots=True)
class Child:
    name: str
    process: ManagedProcess
    start: Callable[[], None]
    """Starts (or restarts) the process; may rewrite its config first."""
    liveness: Path | None = None
    """The file the child touches while alive (None: only exits are seen)."""
    restarts: int = 0
    hung_kills: int = 0
    backoff_ms: int = 0
    started_at: float = 0.0
    started_wall: float = 0.0
    pid: int | None = None
    """The incarnation the times above are of: a process started by someone
    else (the cluster's first start, a fault, maintenance) gets fresh ones."""
    restart_at: float | None = None
    exits: deque[float] = field(default_factory=deque)
    """When it exited, within the crash-loop window (monotonic)."""
    gave_up: bool = False
    holds: int = 0
    """Maintenance blocks under way on it (`Supervisor.held`): they nest."""
    drained: bool = False
    """Stopped by `ironbook drain` until `undrain`."""
    flagged: bool = False
    """Its current silence (or crash loop, in dry run) was already reported."""
    killed_hung: str = ""
    """Why it was killed as hung, until its exit is seen."""
    down_reason: str = ""
    """Why it is down, from its exit until it is restarted."""
    events: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        """Left alone by the supervisor: under maintenance, or drained."""
        return self.holds > 0 or self.drained

    @property
    def state(self) -> ChildState:
        if self.held:
            return "held"
        if self.gave_up:
            return "gave_up"
        return "running" if self.process.is_running() else "restarting"


class Supervisor:
    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.children: dict[str, Child] = {}
        self.on_change: Callable[[], None] = lambda: None
        """Called after a round that started, killed or gave up on a child."""
        self.on_remediation: Callable[[Remediation], None] = lambda _: None
        self.on_restart: Callable[[Child, str], None] = lambda _child, _why: None
        """Called after a child that was down is started again, with why it was down."""
        self._remediations: deque[float] = deque()
        self._changed = False
        self._checked_at: float | None = None
        self._resumed_wall = 0.0
        """When its own rounds last resumed after standing still: silences
        are counted from then at the earliest."""

    def add(
        self,
        name: str,
        process: ManagedProcess,
        start: Callable[[], None],
        liveness: Path | None = None,
    ) -> Child:
        child = Child(
            name=name,
            process=process,
            start=start,
            liveness=liveness,
            backoff_ms=self.policy.initial_backoff_ms,
        )
        self.children[name] = child
        return child

    def start_all(self) -> None:
        for child in self.children.values():
            if not child.process.is_running():
                self._start(child)

    def statuses(self) -> list[ChildStatus]:
        return [
            ChildStatus(
                name=child.name,
                pid=child.process.pid,
                state=child.state,
                restarts=child.restarts,
                hung_kills=child.hung_kills,
                last_event=child.events[-1] if child.events else "",
            )
            for child in self.children.values()
        ]

    @contextlib.contextmanager
    def held(self, name: str) -> Iterator[Child]:
        """Leave `name` alone (maintenance stops and starts it itself); once
        the last of the nested holds ends (and it is not drained), supervise
        it again as if it had just started."""
        child = self.children[name]
        child.holds += 1
        try:
            yield child
        finally:
            child.holds -= 1
            if not child.held:
                self._note_started(child)

    def set_drained(self, name: str, drained: bool) -> None:
        """`ironbook drain` (left stopped) or `undrain` (supervised again,
        which starts it) of child `name`."""
        self.children[name].drained = drained

    def revive(self, name: str) -> None:
        """Supervise a child that was given up on again, from a fresh budget."""
        child = self.children[name]
        child.gave_up = False
        child.flagged = False
        child.exits.clear()
        child.backoff_ms = self.policy.initial_backoff_ms
        child.restart_at = None

    def kill(self, name: str, detail: str) -> int | None:
        """Kill child `name` by its PID as a hung one (a remediation decided
        elsewhere, `detail` saying why); the next rounds restart it. The PID
        killed, or None if it was not running or is held or given up on."""
        child = self.children[name]
        pid = child.process.pid
        if child.held or child.gave_up or pid is None or not child.process.is_running():
            return None
        child.killed_hung = detail
        child.hung_kills += 1
        child.events.append(f"killed {name}: {detail}")
        child.process.kill()
        self._changed = True
        return pid

    def _start(self, child: Child) -> None:
        child.start()
        self._note_started(child)

    def _note_started(self, child: Child) -> None:
        child.pid = child.process.pid
        child.started_at = time.monotonic()
        child.started_wall = time.time()
        child.restart_at = None
        child.flagged = False
        self._changed = True

    def check(self) -> None:
        """One supervision round: kill the hung, schedule restarts of the
        dead, give up on crash loops, run the restarts that are due.

        When the rounds themselves stood still for over half the hung limit
        (the host paused, or this process's loop was held), every child's
        silence is counted from now: the children were most likely held
        alike, and killing them all as hung would turn a pause into an
        outage."""
        now = time.monotonic()
        if self._checked_at is not None:
            paused_s = now - self._checked_at
            if paused_s > self.policy.hung_after_ms / 2000:
                self._resumed_wall = time.time()
                log.warning(
                    "supervision stood still for %.1f s (a host or process pause): "
                    "children's silences are counted from now",
                    paused_s,
                )
        self._checked_at = now
        for child in self.children.values():
            if child.held or child.gave_up:
                continue
            if child.process.is_running():
                if child.pid != child.process.pid:
                    self._note_started(child)
                if now - child.started_at >= self.policy.stable_after_ms / 1000:
                    child.backoff_ms = self.policy.initial_backoff_ms
                self._check_silence(child, now)
            elif child.restart_at is None:
                self._exited(child, now)
            elif now >= child.restart_at:
                self._restart(child)
        if self._changed:
            self._changed = False
            self.on_change()

    def _exited(self, child: Child, now: float) -> None:
        policy = self.policy
        code = child.process.returncode()
        if child.killed_hung:
            child.down_reason = f"killed as hung ({child.killed_hung})"
            child.killed_hung = ""
        else:
            child.down_reason = f"exited with code {code}"
        child.exits.append(now)
        while child.exits and now - child.exits[0] > policy.crash_loop_window_ms / 1000:
            child.exits.popleft()
        if len(child.exits) > policy.crash_loop_restarts:
            window_s = policy.crash_loop_window_ms / 1000
            detail = (
                f"exited {len(child.exits)} times within {window_s:g} s (last code {code}); "
                "not restarting it"
            )
            if not policy.dry_run:
                child.gave_up = True
                self._changed = True
                self._remediate("crash_loop_give_up", child, detail)
                return
            if not child.flagged:
                child.flagged = True
                self._remediate("crash_loop_give_up", child, detail)
        child.restart_at = now + child.backoff_ms / 1000
        message = f"{child.name} exited ({code}); restarting in {child.backoff_ms} ms"
        log.warning(message)
        child.events.append(message)
        child.backoff_ms = min(child.backoff_ms * 2, policy.max_backoff_ms)

    def _restart(self, child: Child) -> None:
        try:
            self._start(child)
        except OSError as err:
            log.error("%s failed to start: %s", child.name, err)
            child.restart_at = None
            return
        child.restarts += 1
        log.info("%s restarted (pid %s)", child.name, child.process.pid)
        self.on_restart(child, child.down_reason)

    def silent_ms(self, child: Child) -> tuple[int, int] | None:
        """(how long the child has been silent, the limit that applies), or
        None if it has no liveness file."""
        if child.liveness is None:
            return None
        try:
            touched = child.liveness.stat().st_mtime
        except FileNotFoundError:
            touched = 0.0
        if touched >= child.started_wall:
            limit = self.policy.hung_after_ms
        else:  # no sign of life from this incarnation yet
            touched, limit = child.started_wall, self.policy.startup_grace_ms
        touched = max(touched, self._resumed_wall)
        return int((time.time() - touched) * 1000), limit

    def _check_silence(self, child: Child, now: float) -> None:
        silence = self.silent_ms(child)
        if silence is None or silence[0] <= silence[1]:
            child.flagged = False
            return
        silent, limit = silence
        detail = f"alive but silent for {silent} ms (limit {limit} ms)"
        if self.policy.dry_run:
            if not child.flagged:
                child.flagged = True
                self._remediate("hung_kill", child, detail)
            return
        while self._remediations and now - self._remediations[0] > 60.0:
            self._remediations.popleft()
        if len(self._remediations) >= self.policy.max_remediations_per_minute:
            if not child.flagged:
                child.flagged = True
                self._remediate(
                    "hung_kill_suppressed",
                    child,
                    f"{detail}; {len(self._remediations)} kills in the last minute already",
                )
            return
        self._remediations.append(now)
        self._remediate("hung_kill", child, detail)
        child.killed_hung = detail
        child.hung_kills += 1
        child.process.kill()
        self._changed = True

    def _remediate(self, action: RemediationAction, child: Child, detail: str) -> None:
        remediation = Remediation(
            action=action,
            child=child.name,
            pid=child.process.pid,
            dry_run=self.policy.dry_run,
            detail=detail,
            at_ms=time.time_ns() // 1_000_000,
        )
        line = json.dumps({"event": "supervisor.remediation", **msgspec.to_builtins(remediation)})
        if action == "crash_loop_give_up":
            log.error(line)
        else:
            log.warning(line)
        prefix = "dry run: " if self.policy.dry_run else ""
        child.events.append(f"{prefix}{action} {child.name}: {detail}")
        self.on_remediation(remediation)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), timeout=self.policy.check_interval_ms / 1000)
