"""One replica of one ledger partition, as a process.

    python -m ironbook.bootstrap replica --nats URL[,URL...] --partition P --node-id ID

It joins whatever NATS cluster the URLs name (local or across machines),
follows the partition's log as a hot standby, leads when it wins the lease,
and heartbeats its role, log position and state hash once a second.
SIGTERM or SIGINT stop it gracefully: a leader gives its lease up at once so
a follower takes over without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ironbook import core
from ironbook.adapters.audit.events import EventOutbox
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.eventloop import watch_loop_lag
from ironbook.adapters.forked_snapshots import ChildFailed, computed_in_child
from ironbook.client import BadRequest, ClientConfig, GaveUp, ledger_over_nats
from ironbook.replication.batch import QuarantineHook
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import Clock, LogEntry
from ironbook.replication.replica import Replica
from ironbook.services.process import run_until_stopped
from ironbook.services.status import (
    HEARTBEAT_INTERVAL_MS,
    ReplicaHeartbeat,
    StateHashReply,
    encode_heartbeat,
    encode_state_hash_reply,
    replica_admin_subject,
    replica_status_subject,
)

log = logging.getLogger("ironbook.replica")
security_log = logging.getLogger("ironbook.security")

LEASE_TTL_MS = 1_000
LEASE_RENEW_INTERVAL_MS = 300
# A follower tries a free lease this often (plus jitter): a dead leader's
# lease expires within a TTL of its last renewal, then is taken within this.
LEASE_RETRY_MS = 100
ROLE_SAMPLE_MS = 100
RELEASE_INTERVAL_MS = 100
"""How often a leader checks for held in-play bets whose delay is over."""
ARCHIVE_INTERVAL_MS = 1_000
"""How often a leader checks for markets past the bet retention window."""
ARCHIVE_COMMANDS_PER_CHECK = 10
"""At most this many `ArchiveSettled` in a row per check: a backlog drains at
up to ~5,000 markets and bets a second, one command at a time, between the
bets rather than instead of them."""
SHUTDOWN_GRACE_S = 3.0
"""A graceful stop gives up on the NATS connection's drain after this long
(and the process ends itself after three times as long; the supervisor's
SIGKILL comes later)."""


def lease_key(partition: int) -> str:
    return f"ledger-{partition}"


def report_quarantine(partition: int, node_id: str) -> QuarantineHook:
    """Log every quarantined log entry as a security event (each replica
    reports what it skipped; the entry's id is the writer's, so bounded)."""

    def report(entry: LogEntry, reason: str) -> None:
        security_log.warning(
            "quarantined log entry: partition %d seq %d batch id %.80r (%d bytes) on %s: %.200s",
            partition,
            entry.seq,
            entry.batch_id,
            len(entry.payload),
            node_id,
            reason,
        )

    return report


async def serve(
    nc: NatsClient, replica: Replica, partition: int, stop: asyncio.Event, *, metrics_url: str = ""
) -> None:
    """Run `replica` (built by the composition root) with its heartbeat (which
    names `metrics_url`), its chores as leader (releasing held bets, archiving
    settled markets) and its state-hash answers, until `stop`."""
    clock = SystemClock()
    log.info("replica %s of partition %d started (pid %d)", replica.node_id, partition, os.getpid())

    hashes = StateHashes(replica)

    async def on_admin(msg: Msg) -> None:
        await _answer_state_hash(replica, hashes, msg)

    admin = await nc.subscribe(replica_admin_subject(replica.node_id), cb=on_admin)
    events = EventOutbox()
    try:
        await run_until_stopped(
            stop,
            replica.run(),
            _heartbeat(nc, replica, partition, clock, metrics_url, events, hashes),
            _hash_when_quiet(replica, hashes),
            events.run(nc),
            watch_loop_lag(replica.loop_blocks),
            _leader_chores(nc, replica, partition, clock),
        )
    finally:
        with contextlib.suppress(Exception):
            await wait_for(admin.unsubscribe(), timeout=1)
    log.info("replica %s stopped", replica.node_id)


async def _heartbeat(
    nc: NatsClient,
    replica: Replica,
    partition: int,
    clock: SystemClock,
    metrics_url: str,
    events: EventOutbox,
    hashes: StateHashes,
) -> None:
    """Publish a heartbeat every second, and at once when the role changes
    (the role is sampled every `ROLE_SAMPLE_MS`), logging every change and
    noting each election in the significant-event log (one event per term:
    its `Nats-Msg-Id` names partition and term). It carries the newest hash
    `_hash_when_quiet` took."""
    subject = replica_status_subject(partition, replica.node_id)
    previous_role = ("", 0)
    next_beat_ms = 0
    refusal = ""
    while True:
        status = replica.status()
        now_ms = clock.now_ms()
        role_changed = (status.role, status.term) != previous_role
        if role_changed:
            log.info(
                "role %s term %d at seq %d (last step-down: %s)",
                status.role,
                status.term,
                status.applied_seq,
                replica.last_step_down or "-",
            )
            previous_role = (status.role, status.term)
        if role_changed or now_ms >= next_beat_ms:
            next_beat_ms = now_ms + HEARTBEAT_INTERVAL_MS
            state_hash, hashed_seq = hashes.latest
            heartbeat = ReplicaHeartbeat(
                node_id=replica.node_id,
                partition=partition,
                pid=os.getpid(),
                role=status.role,
                term=status.term,
                applied_seq=status.applied_seq,
                pending_batches=status.pending_batches,
                state_hash=state_hash,
                hashed_seq=hashed_seq,
                terms_led=status.terms_led,
                last_step_down=replica.last_step_down,
                at_ms=now_ms,
                metrics_url=metrics_url,
                loop_block_ms=replica.loop_blocks.longest_ms(),
                quarantined=status.quarantined,
            )
            with contextlib.suppress(Exception):
                await nc.publish(subject, encode_heartbeat(heartbeat))
        if role_changed and status.role == "leader":
            events.note(
                "leader_elected",
                actor=replica.node_id,
                reason="won the partition's lease",
                target=f"partition {partition}",
                detail=f"term {status.term} at seq {status.applied_seq}",
                msg_id=f"leader-{partition}-{status.term}",
            )
        if replica.checkpoint_refusal != refusal:
            refusal = replica.checkpoint_refusal
            if refusal:
                log.error("SECURITY: this leader signs no checkpoints: %s", refusal)
        await asyncio.sleep(ROLE_SAMPLE_MS / 1000)


@dataclass(frozen=True)
class Chore:
    """A command a leader sends its own partition, every `interval_ms` while
    `due(state, wall-clock ms)` says so, at most `per_check` in a row. What
    the command does is decided by log time, so replay is deterministic; the
    wall clock only says when it is worth sending."""

    name: str
    interval_ms: int
    per_check: int
    due: Callable[[core.LedgerState, int], bool]
    command: Callable[[], core.AnyCommand]


def _release_due(state: core.LedgerState, now_ms: int) -> bool:
    pending = state.pending_bets
    return bool(pending) and pending[0][0] <= now_ms


RELEASE_HELD_BETS = Chore(
    name="releasing held bets",
    interval_ms=RELEASE_INTERVAL_MS,
    per_check=1,
    due=_release_due,
    command=lambda: core.ReleaseBets(request_id=f"release-{uuid.uuid4()}"),
)
"""Accept or reject the in-play bets whose delay is over."""

ARCHIVE_SETTLED = Chore(
    name="archiving settled markets",
    interval_ms=ARCHIVE_INTERVAL_MS,
    per_check=ARCHIVE_COMMANDS_PER_CHECK,
    due=core.archive_due,
    command=lambda: core.ArchiveSettled(request_id=f"archive-{uuid.uuid4()}"),
)
"""Move the markets past the bet retention window, and their bets, out of
the state (each command archives a bounded number of them)."""


class PartitionClient(Protocol):
    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome: ...


class Leading(Protocol):
    def leader_state(self) -> core.LedgerState | None: ...


async def run_chore(
    client: PartitionClient, replica: Leading, partition: int, clock: Clock, chore: Chore
) -> None:
    """Do `chore` for as long as this runs, whenever this replica leads."""
    while True:
        await clock.sleep(chore.interval_ms)
        for _ in range(chore.per_check):
            state = replica.leader_state()
            if state is None or not chore.due(state, clock.now_ms()):
                break
            try:
                await client.submit_to(partition, chore.command())
            except (GaveUp, BadRequest) as error:
                log.warning("%s: %s", chore.name, error)
                break


async def _leader_chores(nc: NatsClient, replica: Replica, partition: int, clock: Clock) -> None:
    """Every `Chore`, through one ledger client of the ledger principal."""
    client = ledger_over_nats(
        nc,
        partitions=partition + 1,
        config=ClientConfig(deadline_ms=5_000),
        issuer=core.LEDGER_PRINCIPAL,
    )
    try:
        async with asyncio.TaskGroup() as group:
            for chore in (RELEASE_HELD_BETS, ARCHIVE_SETTLED):
                group.create_task(run_chore(client, replica, partition, clock, chore))
    finally:
        await client.close()


class StateHashes:
    """The replica's state hash, taken in a forked child (`computed_in_child`)
    while the event loop goes on: encoding and hashing the whole state took
    about 0.5 s per 100k bets, and on the loop that held lease renewals and
    `/metrics` (a leader lost its lease, a follower looked down). One child at
    a time: hold `one_at_a_time` from reading the replica's status to the end
    of `now`."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.one_at_a_time = asyncio.Lock()
        self.latest: tuple[str | None, int] = (None, -1)
        """(hash, applied sequence) of the newest hash `_hash_when_quiet` took."""

    async def now(self) -> str | None:
        """The hash of the state as it is when called (the child forks before
        this first suspends); None before the first restore or if the child
        failed (the caller asks again later)."""
        try:
            hashed = await computed_in_child(self._hash, what="state hash")
        except ChildFailed:
            return None
        return hashed.decode() or None

    def _hash(self) -> bytes:
        return (self._replica.state_hash() or "").encode()


async def _hash_when_quiet(replica: Replica, hashes: StateHashes) -> None:
    """Hash a follower's state once the log has been quiet for a beat (for
    the heartbeat, which `ironbook status` shows). Not on a leader, whose state
    runs ahead of the log while batches are in flight: it keeps reporting the
    hash it last took as a follower."""
    previous_seq = -1
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL_MS / 1000)
        async with hashes.one_at_a_time:
            status = replica.status()
            quiet = status.applied_seq == previous_seq and status.role == "follower"
            previous_seq = status.applied_seq
            if quiet and status.applied_seq != hashes.latest[1]:
                state_hash = await hashes.now()
                if state_hash is not None:
                    hashes.latest = (state_hash, status.applied_seq)


async def _answer_state_hash(replica: Replica, hashes: StateHashes, msg: Msg) -> None:
    """On request only (tests, `ironbook check`). No hash while a batch is in
    flight or a market result is half-settled: the state is still moving (a
    leader appends the next slice on its own), so a hash taken now would not
    be the log's final state."""
    async with hashes.one_at_a_time:
        status = replica.status()
        settled = status.pending_batches == 0 and status.results_in_progress == 0
        state_hash = await hashes.now() if settled else None
    reply = StateHashReply(
        node_id=replica.node_id,
        role=status.role,
        applied_seq=status.applied_seq,
        state_hash=state_hash,
    )
    with contextlib.suppress(Exception):
        await msg.respond(encode_state_hash_reply(reply))
