"""The significant events of `ironbook up` itself: what its supervisor
heals, the maintenance it performs, and the settings it started with.

- `process_restarted`: the supervisor restarted a child; reason: why it was
  down (its exit code, or killed as hung).
- `hung_kill`, `hung_kill_suppressed`, `crash_loop_give_up`: a remediation;
  reason: its detail.
- `drain`, `undrain`, `rolling_restart`: one event per step done (or the
  failure), actor `operator:<user>`, the user at the control socket's end.
- `config_applied`: `up` started, with the digest of its effective settings.
- `dr_takeover`: site B was promoted (`ironbook dr promote`), with its epoch;
  written to site B's log (docs/dr.md).
- `dr_failback`: site A is primary again (`ironbook dr failback`), with its
  epoch; written to site A's log once its mirrors of B are promoted.
- `remediation_restart_replica`, `remediation_kill_restart`,
  `remediation_move_nats_leaders`: the watcher's remediation
  (`services/remediate.py`), run inside `up`: actor `watch`, reason, and the
  evidence (series, detector, score, forecast) with the outcome as detail.

Actor `supervisor` for what the supervisor does, target the child or node.
Events are noted in an `EventOutbox` (a supervision round never waits for
NATS) and written as the `supervisor` identity by `record_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.events import EventOutbox, NoteEvent
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.services.supervisor import Child, Remediation, Supervisor
from ironbook.settings import Settings

log = logging.getLogger("ironbook.audit.events")

PROCESS_RESTARTED = "process_restarted"
CONFIG_APPLIED = "config_applied"
REMEDIATIONS = ("hung_kill", "hung_kill_suppressed", "crash_loop_give_up")
MAINTENANCE = ("drain", "undrain", "rolling_restart")
DR_TAKEOVER = "dr_takeover"
DR_FAILBACK = "dr_failback"
WATCH_REMEDIATIONS = (
    "remediation_restart_replica",
    "remediation_kill_restart",
    "remediation_move_nats_leaders",
)
"""`remediate.event_kind` of each of `remediate.ACTIONS` (a test keeps them equal)."""
KINDS = (
    PROCESS_RESTARTED,
    *REMEDIATIONS,
    *MAINTENANCE,
    CONFIG_APPLIED,
    DR_TAKEOVER,
    DR_FAILBACK,
    *WATCH_REMEDIATIONS,
)
"""Every kind `ironbook up` records: the `supervisor` identity's allow-list."""
CONNECT_RETRY_S = 2.0
FOLLOW_S = 1.0
"""How often the event recorder asks where the primary is."""


def watch_supervisor(supervisor: Supervisor, note: NoteEvent) -> None:
    """Note every restart and remediation `supervisor` makes."""

    def restarted(child: Child, why: str) -> None:
        note(
            PROCESS_RESTARTED,
            actor="supervisor",
            reason=why or "down",
            target=child.name,
            detail=f"pid {child.process.pid}, restart {child.restarts}",
        )

    def remediated(remediation: Remediation) -> None:
        note(
            remediation.action,
            actor="supervisor",
            reason=remediation.detail,
            target=remediation.child,
            detail=f"pid {remediation.pid}{' (dry run: not done)' if remediation.dry_run else ''}",
        )

    supervisor.on_restart = restarted
    supervisor.on_remediation = remediated


def settings_digest(settings: Settings) -> str:
    """SHA-256 of the effective settings as JSON: equal digests, equal settings."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()


def operator() -> str:
    """The user this process runs as, as an actor."""
    return f"operator:{getpass.getuser()}"


def note_config(note: NoteEvent, settings: Settings) -> None:
    c = settings.cluster
    note(
        CONFIG_APPLIED,
        actor=operator(),
        reason="ironbook up started",
        target=str(c.data_dir.resolve()),
        detail=(
            f"settings sha256 {settings_digest(settings)}; partitions {c.partition_count}, "
            f"feed {settings.feed.source}, secure NATS {settings.nats.secure}"
        ),
    )


async def record_events(
    endpoint_of: Callable[[], NatsEndpoint], outbox: EventOutbox, follow_s: float = FOLLOW_S
) -> None:
    """Connect as the identity of `endpoint_of()` (retrying: NATS may be
    restarting) and write `outbox`'s events, until cancelled. The endpoint
    is asked again every `follow_s`: when it names other servers (a DR
    promotion or failback moved the primary), the events go there from then
    on, the one being written included."""
    while True:
        endpoint = endpoint_of()
        nc = await _connect(endpoint)

        async def moved(endpoint: NatsEndpoint = endpoint) -> None:
            while True:
                await asyncio.sleep(follow_s)
                if endpoint_of().url != endpoint.url:
                    raise _PrimaryMoved

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(outbox.run(nc))
                group.create_task(moved())
        except* _PrimaryMoved:
            pass
        finally:
            with contextlib.suppress(Exception):
                await close_nats(nc)
        log.warning("significant events now go to %s", endpoint_of().url)


class _PrimaryMoved(Exception):
    """The endpoint names other servers now: reconnect there."""


async def _connect(endpoint: NatsEndpoint) -> NatsClient:
    while True:
        try:
            return await endpoint.connect("ironbook-up-events")
        except (nats.errors.Error, OSError, TimeoutError) as err:  # events wait in the outbox
            log.warning("significant events wait: NATS not reachable: %r", err)
            await asyncio.sleep(CONNECT_RETRY_S)
