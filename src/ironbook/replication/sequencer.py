"""The leader loop: decide commands speculatively, append them in batches,
reply once the log has acknowledged them.

Commands are decided against a state that runs ahead of the log by the batches
still in flight. Each batch is appended with the log's expected last sequence,
so it lands only directly after the batches it was decided on top of. Replies
go out strictly in log order, only for acknowledged batches. The first failed
append ends the term: every unacknowledged request is answered "retry" and the
caller discards the speculative state.

Except when the entries that got in the way are foreign (quarantined by the
fold rule, `replication.batch`): they change nothing, so the leader's state
is still the log's, and it re-reads the tip, counts them, and appends its
unacknowledged batches again after them, under new batch ids, without losing
its term.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import msgspec

from ironbook import core
from ironbook.replication.batch import (
    QuarantineHook,
    admit,
    encode_signed_batch,
    signed_batch_id,
)
from ironbook.replication.concurrency import cancel_and_wait, race
from ironbook.replication.errors import AppendGaveUp, LogDiverged, Superseded
from ironbook.replication.families import FAMILY_OF
from ironbook.replication.interfaces import (
    AppendUnknown,
    Clock,
    Fenced,
    InboundRequest,
    Log,
    LogEntry,
    LogUnavailable,
    ReplicationError,
    RequestInbox,
    Signer,
    Verifier,
)
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.tree_keeping import LogTree
from ironbook.replication.wire import (
    BadRequestReply,
    OutcomeReply,
    RetryReply,
    encode_reply,
)

_RETRY_ABORTED = encode_reply(RetryReply(reason="aborted"))


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    max_batch_commands: int = 1_000
    """Most commands decided into one appended batch (one log entry)."""
    batch_linger_ms: int = 1
    """How long a batch waits for more commands after its first one."""
    max_inflight_appends: int = 8
    """Batches appended but not yet acknowledged, at most."""
    append_attempts: int = 4
    """Tries of one append whose outcome is unknown, with the same batch id and
    expected sequence, before the leader gives up and steps down. All of them
    must fit in the log's de-duplication window."""
    append_retry_backoff_ms: int = 20
    idle_receive_wait_ms: int = 50
    reply_before_ack: bool = False
    """TEST-ONLY mutation: reply as soon as a command is decided, before its
    batch is durable. Breaks the durability promise; the simulator's checker
    must catch it. Never set outside tests."""


@dataclass(slots=True)
class _Batch:
    batch_id: str
    prev_batch_id: str
    expected_last_seq: int
    events: bytes
    """`core.encode_events` of the batch: signed again under a new id if
    foreign entries make the batch land later than decided."""
    has_slices: bool
    append: asyncio.Task[int]
    payload: bytes
    """The log entry's bytes (a leaf of the log's Merkle tree once acknowledged)."""
    replies: list[tuple[InboundRequest, bytes]] = field(default_factory=list)


_TIP_READ_ATTEMPTS = 10
"""Failed reads in a row after which a leader re-reading the tip gives up
its term (the log cannot tell it what got in)."""
_TIP_READ_MAX_ENTRIES = 256


class Sequencer:
    """One leader term. `run` serves until the term ends, then raises why."""

    def __init__(
        self,
        *,
        term: int,
        log: Log,
        inbox: RequestInbox,
        clock: Clock,
        state: core.LedgerState,
        last_seq: int,
        last_batch_id: str,
        config: SequencerConfig,
        lease_current: Callable[[], bool],
        signer: Signer,
        verifier: Verifier | None,
        quarantined: int = 0,
        on_quarantine: QuarantineHook | None = None,
        loop_blocks: LoopBlocks | None = None,
        tree: LogTree | None = None,
    ) -> None:
        """`tree`: the log's Merkle tree at `last_seq`; each batch is added
        once the log acknowledges it, foreign entries once the leader passes
        them."""
        if config.max_batch_commands < 1 or config.max_inflight_appends < 1:
            raise ValueError("batch size and appends in flight must be at least 1")
        self._term = term
        self._log = log
        self._inbox = inbox
        self._clock = clock
        self._config = config
        self._lease_current = lease_current
        self._state = state
        self._acked_seq = last_seq
        self._decided_seq = last_seq
        self._decided_batch_id = last_batch_id
        self._batch_count = 0
        self._inflight: deque[_Batch] = deque()
        self._slots = asyncio.Semaphore(config.max_inflight_appends)
        self._signer = signer
        self._verifier = verifier
        self._on_quarantine = on_quarantine
        self.quarantined = quarantined
        """Log entries quarantined up to `acked_seq`, as the fold counts them."""
        self.tip_rereads = 0
        """Times foreign entries moved the log under this leader."""
        self._batch_ready = asyncio.Event()
        self._serving = asyncio.Event()
        """Clear while an append failed: nothing more is decided until the
        leader knows what the log holds (or the term ends)."""
        self._serving.set()
        self._undecided: list[InboundRequest] = []
        self._loop_blocks = loop_blocks or LoopBlocks()
        self._tree = tree
        self.commands_decided = 0
        self.slices_decided = 0
        self._slice_batch_seq = 0
        """Where the newest batch holding result slices lands."""
        self._failed_results: set[str] = set()
        """Markets whose next slice raised in this term: not tried again."""
        self._reappends_without_progress = 0
        """Rounds in a row that appended fenced batches again unchanged
        (`_recover_fenced`) with no batch acknowledged in between."""
        self.commands_failed = 0
        self.commands_wrong_family = 0
        """Commands refused because they came on another family's subject."""
        self.batches_acked = 0

    @property
    def acked_seq(self) -> int:
        """The newest log sequence this leader knows is durable."""
        return self._acked_seq

    @property
    def decided_seq(self) -> int:
        """The log sequence the newest decided batch is meant to land at."""
        return self._decided_seq

    @property
    def pending_batches(self) -> int:
        return len(self._inflight)

    @property
    def state(self) -> core.LedgerState:
        """The speculative state: the log up to `acked_seq` plus every batch
        in flight. Equal to the durable state when nothing is in flight."""
        return self._state

    async def run(self) -> NoReturn:
        """Serve until the term ends; raises `Fenced` or a `StepDown`."""
        try:
            await race(self._intake(), self._acknowledge())
        finally:
            await self._abort()
        raise AssertionError("the sequencer's loops never return")

    async def _intake(self) -> NoReturn:
        while True:
            await self._slots.acquire()
            await self._collect()
            # An append failed: decide nothing until `_acknowledge` has found
            # out what the log holds (it ends the term, or serving resumes).
            await self._serving.wait()
            if not self._undecided and not self._slice_due():
                self._slots.release()
                continue
            await self._decide_and_append()

    async def _collect(self) -> None:
        """Receive into `_undecided` (so a step-down mid-wait still answers
        them) until the batch is full or has lingered long enough."""
        config = self._config
        max_requests = config.max_batch_commands
        # A result in progress: decide its next slice at once when it is due,
        # and look again soon when it waits for its previous slice's ack.
        if self._slice_due():
            idle_wait_ms = 0
        elif self._results_to_continue():
            idle_wait_ms = config.batch_linger_ms
        else:
            idle_wait_ms = config.idle_receive_wait_ms
        self._undecided.extend(await self._inbox.receive(max_requests, wait_ms=idle_wait_ms))
        if not self._undecided:
            return
        deadline_ms = self._clock.now_ms() + config.batch_linger_ms
        while len(self._undecided) < max_requests:
            remaining_ms = deadline_ms - self._clock.now_ms()
            if remaining_ms <= 0:
                break
            more = await self._inbox.receive(
                max_requests - len(self._undecided), wait_ms=remaining_ms
            )
            if not more:
                break
            self._undecided.extend(more)

    async def _decide_and_append(self) -> None:
        requests = self._undecided
        now_ms = self._clock.now_ms()
        clock = self._clock
        blocks = self._loop_blocks
        # Taken before the client commands: a result they begin has its first
        # slice in this batch already, so each entry holds one slice a market.
        continuations = core.continuations(self._state) if self._slice_due() else []
        events: list[core.AnyEvent] = []
        replies: list[tuple[InboundRequest, bytes]] = []
        bad: list[tuple[InboundRequest, bytes]] = []
        for request in requests:
            try:
                command = core.decode_command(request.payload)
            except msgspec.MsgspecError as error:
                bad.append((request, encode_reply(BadRequestReply(message=str(error)))))
                continue
            if FAMILY_OF[type(command)] != request.family:
                # Sent on a subject its sender may use, but not this command's.
                self.commands_wrong_family += 1
                message = f"{type(command).__name__} is not a {request.family} command"
                bad.append((request, encode_reply(BadRequestReply(message=message))))
                continue
            try:
                outcome = core.decide(self._state, command, now_ms)
            except Exception as error:
                # A bug in the core on one command (decide is pure, so the
                # state is untouched) must not take the partition down with
                # every leader that retries it.
                self.commands_failed += 1
                message = f"internal error: {type(error).__name__}: {error}"
                bad.append((request, encode_reply(BadRequestReply(message=message))))
                continue
            for event in outcome.events:
                core.apply(self._state, event)
            events.extend(outcome.events)
            replies.append((request, encode_reply(OutcomeReply(core.encode_outcome(outcome)))))
        self.commands_decided += len(replies)
        self._undecided = []
        decided_ms = clock.now_ms()
        blocks.record("decide", decided_ms - now_ms)
        slices = self._decide_slices(continuations, now_ms)
        events.extend(slices)
        sliced_ms = clock.now_ms()
        blocks.record("settle_slice", sliced_ms - decided_ms)

        if events:
            encoded = core.encode_events(events)
            batch = self._start_append(encoded, has_slices=bool(slices))
            blocks.record("encode", clock.now_ms() - sliced_ms)
            self._inflight.append(batch)
            self._batch_ready.set()
            if self._config.reply_before_ack:
                await self._send(replies)
            else:
                batch.replies.extend(replies)
        else:
            self._slots.release()
            if self._inflight and not self._config.reply_before_ack:
                # Only reads, refusals and repeats: their first outcomes may sit
                # in a batch still in flight, so answer after the newest one.
                # Its acknowledgement at the expected position also proves that
                # no rival wrote before it, so the answers were current.
                self._inflight[-1].replies.extend(replies)
            elif self._lease_current():
                await self._send(replies)
            else:
                # Nothing in flight proves this replica still leads, and a
                # leader paused past its lease (SIGSTOP, a long GC) may wake up
                # behind a rival's writes: answering from its state would be a
                # stale read. The client retries, by then on whoever leads.
                await self._send([(request, _RETRY_ABORTED) for request, _ in replies])
        await self._send(bad)

    def _start_append(self, events: bytes, *, has_slices: bool) -> _Batch:
        """Sign the next batch on top of the last one decided and start
        appending it."""
        self._batch_count += 1
        expected_last_seq = self._decided_seq
        self._decided_seq += 1
        batch_id = signed_batch_id(self._term, self._batch_count)
        prev_batch_id = self._decided_batch_id
        if has_slices:
            self._slice_batch_seq = self._decided_seq
        payload = encode_signed_batch(self._signer, batch_id, prev_batch_id, events)
        self._decided_batch_id = batch_id
        append = asyncio.get_running_loop().create_task(
            self._append(payload, expected_last_seq, batch_id)
        )
        return _Batch(
            batch_id, prev_batch_id, expected_last_seq, events, has_slices, append, payload
        )

    def _slice_due(self) -> bool:
        """A result is in progress and no batch holding a slice is in flight:
        slices go one append at a time, so the other batches in flight (and
        the client commands in them) are never queued behind a run of slices."""
        return self._results_to_continue() and self._acked_seq >= self._slice_batch_seq

    def _results_to_continue(self) -> bool:
        return len(self._state.settlements) > len(self._failed_results)

    def _decide_slices(
        self, continuations: list[core.ContinueResult], now_ms: int
    ) -> list[core.AnyEvent]:
        """The next slice of every market result that was in progress when the
        batch began, after the batch's client commands: one slice per market
        per batch, so a big result takes turns with the client commands."""
        events: list[core.AnyEvent] = []
        for continuation in continuations:
            if continuation.market_id in self._failed_results:
                continue
            try:
                outcome = core.decide(self._state, continuation, now_ms)
            except Exception:
                # As for a client command: a core bug must not take the
                # partition down. The result stays unfinished, the market
                # settling, until a fixed release (or the next term) tries again.
                self.commands_failed += 1
                self._failed_results.add(continuation.market_id)
                continue
            for event in outcome.events:
                core.apply(self._state, event)
            events.extend(outcome.events)
            self.slices_decided += len(outcome.events)
        return events

    async def _append(self, payload: bytes, expected_last_seq: int, batch_id: str) -> int:
        attempts = self._config.append_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._log.append(
                    payload, expected_last_seq=expected_last_seq, batch_id=batch_id
                )
            except Fenced:
                self._serving.clear()
                raise
            except (AppendUnknown, LogUnavailable) as error:
                if attempt == attempts:
                    self._serving.clear()
                    raise AppendGaveUp(
                        f"batch {batch_id} still unknown after {attempts} attempts"
                    ) from error
                await self._clock.sleep(self._config.append_retry_backoff_ms)
        raise AssertionError("unreachable")

    async def _acknowledge(self) -> NoReturn:
        while True:
            while not self._inflight:
                self._batch_ready.clear()
                await self._batch_ready.wait()
            batch = self._inflight[0]
            try:
                seq = await batch.append
            except Fenced as fenced:
                await self._recover_fenced(fenced)
                continue
            if seq != batch.expected_last_seq + 1:
                raise LogDiverged(
                    f"batch {batch.batch_id} landed at {seq}, expected "
                    f"{batch.expected_last_seq + 1}"
                )
            await self._acknowledged(seq)

    async def _acknowledged(self, seq: int) -> None:
        """The first batch in flight is in the log at `seq`: answer its requests."""
        batch = self._inflight.popleft()
        self._slots.release()
        if self._tree is not None:
            self._tree.add(seq, batch.payload)
        self._acked_seq = seq
        self.batches_acked += 1
        self._reappends_without_progress = 0
        await self._send(batch.replies)

    async def _recover_fenced(self, fenced: Fenced) -> None:
        """The first batch in flight was fenced: the log was not where this
        leader expected it. Read what lies past the acknowledged tip and keep
        the term whenever the log still holds only this leader's writes:

        - our own batches, which landed although their acknowledgement was
          lost (a stream leader that stepped down with the append in flight,
          and a retry refused as fenced by its successor): acknowledged now;
        - nothing at all (a new stream leader still applying what its
          predecessor acknowledged answers with a last sequence behind ours):
          the fenced batches are appended again unchanged, same ids and
          expected sequences, a bounded number of rounds;
        - foreign entries (quarantined by the fold rule) and our own batches
          voided behind them: counted, and every unacknowledged batch is
          appended again after them.

        Anything the fold would apply that is not ours is another leader's:
        raises `Superseded`."""
        self._serving.clear()
        for batch in self._inflight:
            # Wait for every append in flight (none may land later, under our
            # feet); one whose outcome stays unknown ends the term.
            with contextlib.suppress(Fenced):
                await batch.append
        try:
            entries = await self._read_past(self._acked_seq)
        except ReplicationError as error:
            raise Fenced(f"{fenced}; the tip could not be re-read: {error}") from error
        while entries and self._inflight and _is_batch(entries[0], self._inflight[0]):
            await self._acknowledged(entries.pop(0).seq)
        if entries:
            self._append_after_foreign_entries(entries, fenced)
        else:
            await self._append_fenced_again(fenced)
        self._serving.set()

    async def _append_fenced_again(self, fenced: Fenced) -> None:
        """Nothing lies past the acknowledged tip: append every batch whose
        append was fenced again, unchanged, once the log has had a moment to
        catch up."""
        if not any(_was_fenced(batch) for batch in self._inflight):
            return
        self._reappends_without_progress += 1
        if self._reappends_without_progress > self._config.append_attempts:
            raise Fenced(
                f"{fenced}; still nothing past {self._acked_seq} after "
                f"{self._config.append_attempts} rounds of appending again"
            ) from fenced
        await self._clock.sleep(self._config.append_retry_backoff_ms)
        loop = asyncio.get_running_loop()
        for batch in self._inflight:
            if _was_fenced(batch):
                batch.append = loop.create_task(
                    self._append(batch.payload, batch.expected_last_seq, batch.batch_id)
                )

    def _append_after_foreign_entries(self, entries: list[LogEntry], fenced: Fenced) -> None:
        """`entries` got in past the acknowledged tip: if the fold would apply
        none of them, count them and append every unacknowledged batch again
        after them, under new batch ids."""
        tip_batch_id = self._inflight[0].prev_batch_id if self._inflight else self._decided_batch_id
        foreign = self._foreign(entries, tip_batch_id)
        if foreign is None:
            raise Superseded(
                f"the log past {self._acked_seq} holds an entry that is neither this "
                "leader's nor foreign"
            ) from fenced
        self._pass(entries, foreign)
        self._decided_seq = self._acked_seq
        self._decided_batch_id = tip_batch_id
        self._slice_batch_seq = 0
        fenced_batches = list(self._inflight)
        self._inflight.clear()
        for old in fenced_batches:
            batch = self._start_append(old.events, has_slices=old.has_slices)
            batch.replies = old.replies
            self._inflight.append(batch)

    async def absorb_foreign_tail(self, last_seq: int) -> None:
        """The log is at `last_seq`, past everything this leader decided.
        With nothing in flight, read what got in: foreign entries are counted
        and skipped (the next batch lands after them); anything the fold would
        apply is another leader's, and raises `Superseded`. With batches in
        flight, their fencing says the same (`_acknowledge`)."""
        if self._inflight or last_seq <= self._decided_seq:
            return
        self._serving.clear()
        try:
            entries = await self._read_past(self._decided_seq)
            if not entries:
                return
            foreign = self._foreign(entries, self._decided_batch_id)
            if foreign is None:
                raise Superseded(
                    f"the log is at {entries[-1].seq}, this leader wrote up to "
                    f"{self._decided_seq}, and the entries past it are not foreign"
                )
            self._pass(entries, foreign)
            self._decided_seq = self._acked_seq
        finally:
            self._serving.set()

    async def _read_past(self, seq: int) -> list[LogEntry]:
        """Every log entry after `seq`, up to the log's last sequence. Raises
        `LogUnavailable` when the log cannot say."""
        try:
            last_seq = await self._log.last_seq()
        except ReplicationError as error:
            raise LogUnavailable(f"log end unreadable: {error}") from error
        entries: list[LogEntry] = []
        failures = 0
        while seq + len(entries) < last_seq:
            try:
                more = await self._log.read(
                    seq + len(entries) + 1,
                    max_entries=min(_TIP_READ_MAX_ENTRIES, last_seq - seq - len(entries)),
                    wait_ms=self._config.append_retry_backoff_ms,
                )
            except ReplicationError:
                more = []
            if not more:
                failures += 1
                if failures >= _TIP_READ_ATTEMPTS:
                    raise LogUnavailable(f"could not read the log past {seq} to {last_seq}")
                await self._clock.sleep(self._config.append_retry_backoff_ms)
                continue
            failures = 0
            entries.extend(more[: last_seq - seq - len(entries)])
        return entries

    def _foreign(
        self, entries: Sequence[LogEntry], tip_batch_id: str
    ) -> list[tuple[LogEntry, str]] | None:
        """The quarantined entries among `entries` (which follow the applied
        entry `tip_batch_id`), with why; None if the fold would apply any."""
        quarantined: list[tuple[LogEntry, str]] = []
        for entry in entries:
            verdict = admit(entry, tip_batch_id, self._verifier)
            if verdict.admission == "applied":
                return None
            if verdict.admission == "quarantined":
                quarantined.append((entry, verdict.reason))
        return quarantined

    def _pass(self, entries: Sequence[LogEntry], foreign: list[tuple[LogEntry, str]]) -> None:
        """Move past `entries`, which follow `acked_seq` and hold nothing the
        fold applies (`foreign` are the quarantined ones, the rest are void):
        count the foreign ones and add every entry to the log's tree, which
        covers the log as stored, skipped entries too."""
        self.tip_rereads += 1
        if self._tree is not None:
            self._tree.add_entries(entries)
        self._acked_seq = entries[-1].seq
        self.quarantined += len(foreign)
        if self._on_quarantine is not None:
            for entry, reason in foreign:
                self._on_quarantine(entry, reason)

    async def _abort(self) -> None:
        """End the term: stop every append, answer every unacknowledged request
        "retry". Whatever of it landed is found again by replaying the log."""
        await cancel_and_wait([batch.append for batch in self._inflight])
        unanswered: list[tuple[InboundRequest, bytes]] = [
            (request, _RETRY_ABORTED) for request in self._undecided
        ]
        for batch in self._inflight:
            unanswered.extend((request, _RETRY_ABORTED) for request, _ in batch.replies)
        self._inflight.clear()
        self._undecided = []
        await self._send(unanswered)

    @staticmethod
    async def _send(replies: Sequence[tuple[InboundRequest, bytes]]) -> None:
        for request, reply in replies:
            await request.respond(reply)


def _is_batch(entry: LogEntry, batch: _Batch) -> bool:
    """`entry` is `batch`, landed where it was decided to land."""
    return (
        entry.seq == batch.expected_last_seq + 1
        and entry.batch_id == batch.batch_id
        and entry.payload == batch.payload
    )


def _was_fenced(batch: _Batch) -> bool:
    return batch.append.done() and isinstance(batch.append.exception(), Fenced)
