"""Keeps child processes alive: a child that dies is restarted with backoff.

The backoff doubles from `initial_backoff_ms` to `max_backoff_ms` while a
child keeps dying, and resets once it has stayed up for `stable_after_ms`.
Only processes the supervisor started are ever signalled, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ironbook.adapters.nats.localproc import ManagedProcess

log = logging.getLogger("ironbook.supervisor")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_backoff_ms: int = 250
    max_backoff_ms: int = 10_000
    stable_after_ms: int = 30_000
    check_interval_ms: int = 200


@dataclass(slots=True)
class Child:
    name: str
    process: ManagedProcess
    start: Callable[[], None]
    """Starts (or restarts) the process; may rewrite its config first."""
    restarts: int = 0
    backoff_ms: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    events: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.children: dict[str, Child] = {}

    def add(self, name: str, process: ManagedProcess, start: Callable[[], None]) -> Child:
        child = Child(
            name=name, process=process, start=start, backoff_ms=self.policy.initial_backoff_ms
        )
        self.children[name] = child
        return child

    def start_all(self) -> None:
        for child in self.children.values():
            if not child.process.is_running():
                self._start(child)

    def _start(self, child: Child) -> None:
        child.start()
        child.started_at = time.monotonic()
        child.restart_at = None

    def check(self) -> None:
        """One supervision round: schedule restarts of the dead, run those due."""
        now = time.monotonic()
        policy = self.policy
        for child in self.children.values():
            if child.process.is_running():
                if now - child.started_at >= policy.stable_after_ms / 1000:
                    child.backoff_ms = policy.initial_backoff_ms
                continue
            if child.restart_at is None:
                code = child.process.returncode()
                child.restart_at = now + child.backoff_ms / 1000
                message = f"{child.name} exited ({code}); restarting in {child.backoff_ms} ms"
                log.warning(message)
                child.events.append(message)
                child.backoff_ms = min(child.backoff_ms * 2, policy.max_backoff_ms)
            elif now >= child.restart_at:
                try:
                    self._start(child)
                except OSError as err:
                    log.error("%s failed to start: %s", child.name, err)
                    child.restart_at = None
                    continue
                child.restarts += 1
                log.info("%s restarted (pid %s)", child.name, child.process.pid)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.policy.check_interval_ms / 1000)
