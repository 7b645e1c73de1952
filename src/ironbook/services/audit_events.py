"""The event recorder: derives significant events from the ledger and signs
the significant-event log.

    python -m ironbook.bootstrap audit-events --nats URL[,URL...] --data-dir D --partitions N

Two duties, one loop:

1. For every partition, follow its log with the replicas' fold rule
   (`replication.batch.admit`: void and quarantined entries are skipped, as
   every replica skips them) and record each significant ledger
   event (`adapters/audit/ledger_events.py`) in `AUDIT_EVENTS`, with its
   position as `source` (`ledger/<p>/<seq>/<index>`) and as `Nats-Msg-Id`. On
   start it resumes after the newest source already recorded. A quarantined
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
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.audit.events import decode_event, record_significant_event
from ironbook.adapters.audit.ledger_events import significant
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.replication.batch import admit
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
QUARANTINED_ENTRY = "quarantined_entry"


def ledger_source(partition: int, seq: int, index: int) -> str:
    return f"ledger/{partition}/{seq}/{index}"


def _parse_source(source: str) -> tuple[int, int, int] | None:
    parts = source.split("/")
    if len(parts) != 4 or parts[0] != "ledger" or not all(p.isdigit() for p in parts[1:]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


@dataclass
class _Cursor:
    """Where a partition's projection stands."""

    applied_seq: int = 0
    last_batch_id: str = ""
    recorded: tuple[int, int] = (0, -1)
    """(seq, index) of the newest event already recorded from this partition."""


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
        async for entry in read_log(events, 1, last):
            self._tree.add(entry.seq, entry.payload)
            with contextlib.suppress(msgspec.MsgspecError):
                parsed = _parse_source(decode_event(entry.payload).source)
                if parsed is not None and parsed[0] in self._cursors:
                    cursor = self._cursors[parsed[0]]
                    cursor.recorded = max(cursor.recorded, parsed[1:])

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
        ledger = AuditedLog(self._nc, partition)
        try:
            entries = await ledger.read(cursor.applied_seq + 1, max_entries=READ_ENTRIES)
        except LogUnavailable:
            return 0
        for entry in entries:
            verdict = admit(entry, cursor.last_batch_id, self._verifiers[partition])
            events = verdict.events
            if events is None:
                # Void or quarantined: skipped like every replica skips it.
                if verdict.admission == "quarantined" and (entry.seq, 0) > cursor.recorded:
                    if not await self._record_quarantine(partition, entry, verdict.reason):
                        return 0  # Try this entry again next round.
                    cursor.recorded = (entry.seq, 0)
                cursor.applied_seq = entry.seq
                continue
            if (entry.seq, 1 << 30) > cursor.recorded:
                for index, event in enumerate(events):
                    if (entry.seq, index) <= cursor.recorded:
                        continue
                    found = significant(event)
                    if found is None:
                        continue
                    source = ledger_source(partition, entry.seq, index)
                    stored = await record_significant_event(
                        self._nc,
                        found.kind,
                        found.actor,
                        found.reason,
                        found.target,
                        found.detail,
                        source=source,
                        msg_id=source,
                        at_ms=found.at_ms,
                    )
                    if not stored:
                        return 0  # Try this entry again next round.
                    cursor.recorded = (entry.seq, index)
            cursor.applied_seq = entry.seq
            cursor.last_batch_id = entry.batch_id
        return len(entries)

    async def _record_quarantine(self, partition: int, entry: LogEntry, reason: str) -> bool:
        source = ledger_source(partition, entry.seq, 0)
        return await record_significant_event(
            self._nc,
            QUARANTINED_ENTRY,
            actor="audit-events",
            reason=reason,
            target=f"partition {partition} seq {entry.seq}",
            detail=f"batch id {entry.batch_id[:80]!r}, {len(entry.payload)} bytes",
            source=source,
            msg_id=source,
        )

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
                await asyncio.wait_for(stop.wait(), poll_ms / 1000)
    log.info("event recorder started: %d events in the log", recorder.tree_size)
    while not stop.is_set():
        if await recorder.step():
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_ms / 1000)
