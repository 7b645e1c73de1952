"""The event recorder: derives significant events from the ledger and signs
the significant-event log.

    python -m ironbook.bootstrap audit-events --nats URL[,URL...] --data-dir D --partitions N

Two duties, one loop:

1. For every partition, follow its log with the replicas' fold rule
   (`replication.batch.admit`: void and quarantined entries are skipped, as
   every replica skips them) and record each significant ledger
   event (`adapters/audit/ledger_events.py`) in `AUDIT_EVENTS`, with its
   position as `source` (`ledger/<p>/<seq>/<index>`) and as `Nats-Msg-Id`.
   Events are published `PUBLISH_WINDOW` at a time, all in flight together
   (JetStream then replicates them in a few Raft appends instead of one
   fsynced round trip each), and the next window waits for the whole window
   to be stored. On start it resumes after the newest source already
   recorded, and records again any of the last window's events that a
   failure left out behind stored ones (`RecordedSources`). A quarantined
   entry (`replication.batch`: undecodable, forged or unsigned on a signed
   chain) is recorded once, as `quarantined_entry` with source
   `ledger/<p>/<seq>/0` (an entry the fold skips has no events of its own),
   however many replicas skipped it.
2. Keep the Merkle tree of `AUDIT_EVENTS` (log `events`) and sign its
   checkpoints exactly as a partition's leader does (`tree_keeping`), through
   the same port. Run one recorder per cluster; a second one's checkpoints
   would be refused by the chain's expected sequence, never forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.events import decode_event, record_significant_event
from ironbook.adapters.audit.ledger_events import Significant, significant
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.replication.batch import Verdict, admit
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import LogEntry, LogUnavailable, Verifier
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.replication.tree_keeping import (
    CheckpointPolicy,
    CheckpointPort,
    CheckpointSchedule,
    CheckpointSuperseded,
    CheckpointUnavailable,
    LogTree,
)

log = logging.getLogger("ironbook.audit.events")

READ_ENTRIES = 256
PUBLISH_WINDOW = 256
"""Significant events published at once, all awaited before the next ones."""
QUARANTINED_ENTRY = "quarantined_entry"

Source = tuple[int, int]
"""(seq, index) of an event in a partition's log."""


def ledger_source(partition: int, seq: int, index: int) -> str:
    return f"ledger/{partition}/{seq}/{index}"


def _parse_source(source: str) -> tuple[int, int, int] | None:
    parts = source.split("/")
    if len(parts) != 4 or parts[0] != "ledger" or not all(p.isdigit() for p in parts[1:]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


def _quarantine(partition: int, entry: LogEntry, reason: str) -> Significant:
    """The significant event of a quarantined entry."""
    return Significant(
        kind=QUARANTINED_ENTRY,
        actor="audit-events",
        reason=reason,
        target=f"partition {partition} seq {entry.seq}",
        detail=f"batch id {entry.batch_id[:80]!r}, {len(entry.payload)} bytes",
        at_ms=time.time_ns() // 1_000_000,
    )


def _unrecorded(
    partition: int, entry: LogEntry, verdict: Verdict, recorded: RecordedSources
) -> Iterator[tuple[Source, Significant]]:
    """The significant events of `entry` not yet recorded, in order. An
    entry the fold skips has none of its own; a quarantined one is itself
    one."""
    if verdict.events is None:
        source = (entry.seq, 0)
        if verdict.admission == "quarantined" and not recorded.stored(source):
            yield source, _quarantine(partition, entry, verdict.reason)
        return
    if recorded.all_stored(entry.seq):
        return
    for index, event in enumerate(verdict.events):
        found = significant(event)
        if found is not None and not recorded.stored((entry.seq, index)):
            yield (entry.seq, index), found


class RecordedSources:
    """Which events of one partition are already in `AUDIT_EVENTS`.

    The recorder publishes a window of events only once every event before
    it is stored, and a window holds at most `PUBLISH_WINDOW` events; but a
    failure can leave one of a window's events out while later ones are
    stored, and the recorder may die before its retry. So on start, of the
    stored sources, the newest `2 * PUBLISH_WINDOW` are kept (the tail): an
    event older than all of them is stored, a newer one only if it is among
    them. The projection publishes what the tail lacks before any event past
    it (`past_tail`), then forgets the tail (`leave_tail`): from there on,
    everything up to `newest` is stored."""

    def __init__(self) -> None:
        self.newest: Source = (0, -1)
        self._tail: set[Source] | None = None
        self._tail_floor: Source = (0, -1)

    @classmethod
    def restored(cls, stored: list[Source]) -> RecordedSources:
        """From the sources found in the stream (any order)."""
        recorded = cls()
        if stored:
            kept = heapq.nlargest(2 * PUBLISH_WINDOW, stored)
            recorded.newest = kept[0]
            recorded._tail = set(kept)
            if len(kept) == 2 * PUBLISH_WINDOW:
                recorded._tail_floor = kept[-1]
        return recorded

    def stored(self, source: Source) -> bool:
        if source > self.newest:
            return False
        if self._tail is None:
            return True
        return source < self._tail_floor or source in self._tail

    def all_stored(self, seq: int) -> bool:
        """Every event of the entry at `seq` is stored."""
        if self._tail is None:
            return (seq, 1 << 30) <= self.newest
        return (seq, 1 << 30) < self._tail_floor

    def past_tail(self, source: Source) -> bool:
        """`source` is newer than every source found on start, which are
        still told apart one by one."""
        return self._tail is not None and source > self.newest

    def leave_tail(self) -> None:
        """Every event up to `newest` is stored."""
        self._tail = None

    def add(self, source: Source) -> None:
        """`source` is stored."""
        if self._tail is not None:
            self._tail.add(source)
        self.newest = max(self.newest, source)


@dataclass
class _Cursor:
    """Where a partition's projection stands."""

    applied_seq: int = 0
    last_batch_id: str = ""
    recorded: RecordedSources = field(default_factory=RecordedSources)


class EventRecorder:
    def __init__(
        self,
        nc: NatsClient,
        verifiers: Sequence[Verifier],
        port: CheckpointPort | None,
        policy: CheckpointPolicy,
    ) -> None:
        """`verifiers`: each partition's batch signatures, by partition."""
        self._nc = nc
        self._partitions = len(verifiers)
        self._verifiers = verifiers
        self._port = port
        self._policy = policy
        self._tree = LogTree(EVENTS_LOG)
        self._schedule: CheckpointSchedule | None = None
        self._cursors = {p: _Cursor() for p in range(self._partitions)}

    @property
    def tree_size(self) -> int:
        return self._tree.size

    async def start(self) -> None:
        """Rebuild the events tree from the stream and find where each
        partition's projection stands."""
        events = AuditedLog(self._nc, EVENTS_LOG)
        last = await events.last_seq()
        stored: dict[int, list[Source]] = {p: [] for p in self._cursors}
        async for entry in read_log(events, 1, last):
            self._tree.add(entry.seq, entry.payload)
            with contextlib.suppress(msgspec.MsgspecError):
                parsed = _parse_source(decode_event(entry.payload).source)
                if parsed is not None and parsed[0] in stored:
                    stored[parsed[0]].append(parsed[1:])
        for partition, sources in stored.items():
            self._cursors[partition] = _Cursor(recorded=RecordedSources.restored(sources))

    async def step(self) -> int:
        """One round: project what is new, extend the tree, sign if due.
        Returns how many ledger entries were read."""
        read = 0
        for partition in range(self._partitions):
            read += await self._project(partition)
        await self._extend_tree()
        await self._sign_if_due()
        return read

    async def _project(self, partition: int) -> int:
        cursor = self._cursors[partition]
        recorded = cursor.recorded
        ledger = AuditedLog(self._nc, partition)
        try:
            entries = await ledger.read(cursor.applied_seq + 1, max_entries=READ_ENTRIES)
        except LogUnavailable:
            return 0
        window: list[tuple[Source, Significant]] = []
        last_batch_id = cursor.last_batch_id
        done: tuple[int, str] | None = None
        """The newest entry whose events are all stored or in `window`."""

        async def add(source: Source, found: Significant) -> bool:
            """Put `found` in the window, after publishing the window if it
            is full or `source` is past the tail. False if that failed."""
            nonlocal window
            if window and (len(window) == PUBLISH_WINDOW or recorded.past_tail(source)):
                if not await self._publish(partition, window):
                    return False
                window = []
                if done is not None:
                    cursor.applied_seq, cursor.last_batch_id = done
            if recorded.past_tail(source):
                recorded.leave_tail()
            window.append((source, found))
            return True

        for entry in entries:
            verdict = admit(entry, last_batch_id, self._verifiers[partition])
            for source, found in _unrecorded(partition, entry, verdict, recorded):
                if not await add(source, found):
                    return 0  # From the first event not stored, next round.
            if verdict.events is not None:
                last_batch_id = entry.batch_id
            done = (entry.seq, last_batch_id)
        if window and not await self._publish(partition, window):
            return 0
        if done is not None:
            cursor.applied_seq, cursor.last_batch_id = done
        return len(entries)

    async def _publish(self, partition: int, window: list[tuple[Source, Significant]]) -> bool:
        """Record `window` (in source order), every event in flight at once.
        The sources up to the first one not stored count as recorded; False
        if there was one."""
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    record_significant_event(
                        self._nc,
                        found.kind,
                        found.actor,
                        found.reason,
                        found.target,
                        found.detail,
                        source=ledger_source(partition, *source),
                        msg_id=ledger_source(partition, *source),
                        at_ms=found.at_ms,
                    )
                )
                for source, found in window
            ]
        recorded = self._cursors[partition].recorded
        for (source, _), task in zip(window, tasks, strict=True):
            if not task.result():
                return False
            recorded.add(source)
        return True

    async def _extend_tree(self) -> None:
        events = AuditedLog(self._nc, EVENTS_LOG)
        while True:
            try:
                entries = await events.read(self._tree.size + 1, max_entries=READ_ENTRIES)
            except LogUnavailable:
                return
            self._tree.add_entries(entries)
            if len(entries) < READ_ENTRIES:
                return

    async def _sign_if_due(self) -> None:
        if self._port is None:
            return
        now_ms = time.time_ns() // 1_000_000
        try:
            if self._schedule is None:
                schedule = CheckpointSchedule(self._policy, self._tree)
                refusal = schedule.start(await self._port.last_signed(), now_ms)
                if refusal:
                    log.error("events log not signed: %s", refusal)
                    return
                self._schedule = schedule
            head = self._schedule.due(now_ms)
            if head is None:
                return
            checkpoint = await self._port.publish(head)
        except CheckpointSuperseded as err:
            log.warning("events checkpoint superseded (%s): re-reading the chain", err)
            self._schedule = None
            return
        except CheckpointUnavailable as err:
            log.warning("events checkpoint not published: %s", err)
            return
        self._schedule.signed(checkpoint, now_ms)


async def serve(recorder: EventRecorder, *, poll_ms: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recorder.start()
            break
        except LogUnavailable as err:
            log.warning("events log unreadable, retrying: %s", err)
            with contextlib.suppress(TimeoutError):
                await wait_for(stop.wait(), poll_ms / 1000)
    log.info("event recorder started: %d events in the log", recorder.tree_size)
    while not stop.is_set():
        if await recorder.step():
            continue
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), poll_ms / 1000)
