"""The ledger client's protocol, without I/O: routing, batching, retries,
backoff and deadlines as a state machine its driver feeds and asks.

    machine = ClientMachine(partitions=2, config=..., batching=..., rng=rng)
    ticket = machine.submit(command, now_ms)        # a caller wants an outcome
    step = machine.poll(now_ms)                     # what to do now
    for send in step.sends: ...                     # one batch request each
    machine.reply_received(send.request_no, replies, now_ms)
    machine.request_failed(send.request_no, "timeout", now_ms)
    for done in step.resolved: ...                  # outcome or error per ticket
    # call poll again at step.wake_at_ms, or after feeding anything in

The machine owns no socket, task or clock: time arrives as `now_ms`,
randomness from the injected rng. `LedgerClient` drives it over a transport
in production (NATS) and in the simulator alike, so the simulator's seeds
run the retry path that ships.

Routing: an account command goes to the partition that owns the account; a
query to the one partition that can answer it; a market command (feed
batches and producer status included) to every partition, since each
partition's log carries its own copy of every market, and the replies are
combined (a feed batch reports the smallest cursor reached).

Batching: commands of one family (`families.py`: wallet, betting, market,
query) waiting for one partition travel together in one request (at most
`max_batch_commands`), with at most `max_inflight_batches` requests per
partition and family awaiting replies; the rest wait their turn. A batch never
mixes families: each family has its own subject, which the NATS permissions
of the sender must allow.

Retries: a command that gets no outcome (timeout, nobody serving, the leader
stepped down or shed load) is sent again, always with the same bytes and so
the same request id (the ledger answers a repeated id with its first
outcome: a failover is latency, never a duplicate), after a full-jitter
exponential backoff, until its deadline. Past the deadline the caller hears
`GaveUp`; a command the leader cannot decode is answered `BadRequest` at
once and never resent.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import msgspec

from ironbook import core
from ironbook.core.events import FeedReply, SettlementReply
from ironbook.replication.families import FAMILIES, FAMILY_OF, MARKET_COMMANDS, Family
from ironbook.replication.interfaces import ReplicationError
from ironbook.replication.wire import BadRequestReply, OutcomeReply, RetryReply, decode_reply


class GaveUp(ReplicationError):
    """No outcome before the deadline. The command may or may not have been
    applied; submitting it again (same request id) finds out."""


class BadRequest(ReplicationError):
    """The leader could not decode the command; retrying will not help."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    request_timeout_ms: int = 1_000
    """One batch request waits this long for its reply."""
    deadline_ms: int = 15_000
    """Total time one `submit` may take, retries included."""
    backoff_initial_ms: int = 25
    backoff_max_ms: int = 1_000

    def __post_init__(self) -> None:
        if min(self.request_timeout_ms, self.deadline_ms, self.backoff_initial_ms) < 1:
            raise ValueError("client timeouts and backoff must be at least 1 ms")
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError("backoff_max_ms must be at least backoff_initial_ms")


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_batch_commands: int = 1_000
    """Commands in one batch request."""
    max_inflight_batches: int = 16
    """Batch requests awaiting replies, per partition and command family."""

    def __post_init__(self) -> None:
        if self.max_batch_commands < 1 or self.max_inflight_batches < 1:
            raise ValueError("batch caps must be at least 1")


FailureReason = Literal["timeout", "no_responders", "transport", "malformed"]
"""Why a batch request got no usable reply."""

_QUERIES = get_args(core.AnyQuery)

_Route = Literal["account", "query", "market", "partition"]


def _route(kind: type) -> _Route:
    if issubclass(kind, _QUERIES):
        return "query"
    if issubclass(kind, MARKET_COMMANDS):
        return "market"
    if issubclass(kind, core.ReleaseBets | core.ArchiveSettled):
        return "partition"
    return "account"


_ROUTES: Mapping[type, _Route] = {
    kind: _route(kind) for kind in (*get_args(core.AnyCommand), *_QUERIES)
}
"""Where each command type goes (one lookup per submit instead of a chain of
type checks: a measurable share of the client's CPU)."""


def routed_partitions(command: core.AnyCommand | core.AnyQuery, partitions: int) -> list[int]:
    """The partitions `command` is sent to: its account's, the one that can
    answer a query, every one for a market command. `ValueError` for a
    command that names no account or concerns one partition (`submit_to`),
    `TypeError` for anything else."""
    route = _ROUTES.get(type(command))
    if route == "account":
        account_id = getattr(command, "account_id", None)
        if not isinstance(account_id, str):
            raise ValueError(f"{type(command).__name__} names no account")
        return [core.partition_of(account_id, partitions)]
    if route == "query":
        assert isinstance(command, _QUERIES)
        return [core.query_partition(command, partitions)]
    if route == "market":
        return list(range(partitions))
    if route == "partition":
        raise ValueError(f"{type(command).__name__} concerns one partition: use submit_to")
    raise TypeError(f"{type(command).__name__} is not a ledger command")


class Send(NamedTuple):
    """Send `payloads` (encoded commands, all of `family`) to `partition` as
    one batch request and report its replies, in the same order, or its
    failure."""

    request_no: int
    partition: int
    family: Family
    payloads: tuple[bytes, ...]
    timeout_ms: int


class Resolved(NamedTuple):
    """The end of one submit: its outcome, or the error its caller gets."""

    ticket: int
    result: core.Outcome | GaveUp | BadRequest


class Step(NamedTuple):
    sends: tuple[Send, ...]
    resolved: tuple[Resolved, ...]
    wake_at_ms: int | None
    """Poll again at this time even if nothing else happens (None: only when
    something is fed in)."""


@dataclass(slots=True, eq=False)
class _Part:
    """One command on its way to one partition."""

    submit: _Submit
    partition: int
    family: Family
    payload: bytes
    backoff_ms: int
    outcome: core.Outcome | None = None


@dataclass(slots=True, eq=False)
class _Submit:
    ticket: int
    request_id: str
    deadline_ms: int
    parts: list[_Part]
    """One per partition the command goes to, in partition order."""
    waiting_for: int
    """Parts without an outcome yet."""
    done: bool = False


_QueueKey = tuple[int, Family]


@dataclass(slots=True)
class _Queue:
    ready: deque[_Part] = field(default_factory=deque)
    in_flight: int = 0


class ClientMachine:
    def __init__(
        self,
        *,
        partitions: int,
        config: ClientConfig,
        batching: BatchConfig,
        rng: random.Random,
        issuer: core.Issuer | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self._issuer = issuer
        """Who the commands are from, unless a command names its principal
        itself; None: a command without one is sent as it is, and refused."""
        self._config = config
        self._batching = batching
        self._rng = rng
        self._queues = {
            (partition, family): _Queue() for partition in range(partitions) for family in FAMILIES
        }
        """One per partition and command family."""
        self._submits: dict[int, _Submit] = {}
        self._requests: dict[int, tuple[_QueueKey, list[_Part]]] = {}
        self._retries: list[tuple[int, int, _Part]] = []
        """Heap of (due_ms, order, part) waiting out their backoff."""
        self._deadlines: deque[tuple[int, int]] = deque()
        """(deadline_ms, ticket) in submit order, so in deadline order too."""
        self._resolved: list[Resolved] = []
        self._tickets = itertools.count(1)
        self._request_nos = itertools.count(1)
        self._order = itertools.count()
        self.attempts = 0
        """Commands sent, resends included."""
        self.requests = 0
        """Batch requests sent."""
        self.resends: Counter[str] = Counter()
        """Why commands were sent again: `timeout`, `no_responders`,
        `transport`, `malformed` or the leader's `retry:<reason>`."""

    # Events in.

    def submit(self, command: core.AnyCommand | core.AnyQuery, now_ms: int) -> int:
        """A caller wants the outcome of `command`; returns its ticket."""
        return self._open(command, routed_partitions(command, self.partitions), now_ms)

    def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery, now_ms: int
    ) -> int:
        """Send `command` to one partition as is, without routing: for commands
        about a partition itself (`ReleaseBets`) and per-partition reads."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
        return self._open(command, [partition], now_ms)

    def cancel(self, ticket: int) -> None:
        """The caller stopped waiting: send nothing more for it."""
        submit = self._submits.pop(ticket, None)
        if submit is not None:
            submit.done = True
            submit.parts.clear()

    def reply_received(self, request_no: int, replies: Sequence[bytes], now_ms: int) -> None:
        """The replies to a batch request, in the order of its payloads."""
        parts = self._finish_request(request_no)
        if len(replies) != len(parts):
            self._retry_all(parts, "malformed", now_ms)
            return
        for part, raw in zip(parts, replies, strict=True):
            if part.submit.done:
                continue
            try:
                reply = decode_reply(raw)
            except msgspec.MsgspecError:
                self._retry(part, "malformed", now_ms)
                continue
            if isinstance(reply, OutcomeReply):
                try:
                    outcome = core.decode_outcome(reply.outcome)
                except msgspec.MsgspecError:
                    self._retry(part, "malformed", now_ms)
                    continue
                self._part_done(part, outcome)
            elif isinstance(reply, BadRequestReply):
                self._resolve(part.submit, BadRequest(reply.message))
            else:
                assert isinstance(reply, RetryReply)
                self._retry(part, f"retry:{reply.reason}", now_ms)

    def request_failed(self, request_no: int, reason: FailureReason, now_ms: int) -> None:
        """A batch request got no usable reply; its commands are resent later."""
        parts = self._finish_request(request_no)
        self._retry_all(parts, reason, now_ms)

    # Actions out.

    def poll(self, now_ms: int) -> Step:
        """Advance to `now_ms` and say what to do: the batch requests to send,
        the submits that are over, and when to poll again at the latest."""
        self._expire(now_ms)
        self._release_retries(now_ms)
        sends: list[Send] = []
        for key, queue in self._queues.items():
            if queue.ready:
                sends.extend(self._batches(key, now_ms))
        resolved = tuple(self._resolved)
        self._resolved.clear()
        return Step(tuple(sends), resolved, self._wake_at())

    @property
    def open_submits(self) -> int:
        return len(self._submits)

    # Inside.

    def _open(
        self, command: core.AnyCommand | core.AnyQuery, partitions: list[int], now_ms: int
    ) -> int:
        payload = core.encode_command(core.issued(command, self._issuer))
        ticket = next(self._tickets)
        deadline_ms = now_ms + self._config.deadline_ms
        if self._deadlines:
            # Never before an earlier submit's, even if the clock stepped back.
            deadline_ms = max(deadline_ms, self._deadlines[-1][0])
        submit = _Submit(ticket, command.request_id, deadline_ms, [], len(partitions))
        backoff_ms = self._config.backoff_initial_ms
        family = FAMILY_OF[type(command)]
        for partition in partitions:
            part = _Part(submit, partition, family, payload, backoff_ms)
            submit.parts.append(part)
            self._queues[(partition, family)].ready.append(part)
        self._submits[ticket] = submit
        self._deadlines.append((deadline_ms, ticket))
        return ticket

    def _batches(self, key: _QueueKey, now_ms: int) -> list[Send]:
        queue = self._queues[key]
        sends: list[Send] = []
        while queue.ready and queue.in_flight < self._batching.max_inflight_batches:
            parts: list[_Part] = []
            while queue.ready and len(parts) < self._batching.max_batch_commands:
                part = queue.ready.popleft()
                if not part.submit.done:
                    parts.append(part)
            if not parts:
                break
            request_no = next(self._request_nos)
            self._requests[request_no] = (key, parts)
            queue.in_flight += 1
            self.requests += 1
            self.attempts += len(parts)
            # A reply that can still matter to some command is worth waiting for.
            remaining_ms = max(part.submit.deadline_ms for part in parts) - now_ms
            sends.append(
                Send(
                    request_no=request_no,
                    partition=key[0],
                    family=key[1],
                    payloads=tuple(part.payload for part in parts),
                    timeout_ms=max(1, min(self._config.request_timeout_ms, remaining_ms)),
                )
            )
        return sends

    def _finish_request(self, request_no: int) -> list[_Part]:
        key, parts = self._requests.pop(request_no)
        self._queues[key].in_flight -= 1
        return parts

    def _retry_all(self, parts: list[_Part], reason: str, now_ms: int) -> None:
        for part in parts:
            if not part.submit.done:
                self._retry(part, reason, now_ms)

    def _retry(self, part: _Part, reason: str, now_ms: int) -> None:
        self.resends[reason] += 1
        # Full jitter: the clients of a failed leader spread their retries
        # over the whole backoff instead of returning together.
        pause_ms = self._rng.randint(0, part.backoff_ms)
        part.backoff_ms = min(part.backoff_ms * 2, self._config.backoff_max_ms)
        due_ms = min(now_ms + pause_ms, part.submit.deadline_ms)
        heapq.heappush(self._retries, (due_ms, next(self._order), part))

    def _release_retries(self, now_ms: int) -> None:
        while self._retries and self._retries[0][0] <= now_ms:
            _, _, part = heapq.heappop(self._retries)
            if not part.submit.done:
                self._queues[(part.partition, part.family)].ready.append(part)

    def _expire(self, now_ms: int) -> None:
        # Entries of submits already over leave once they are the oldest, so
        # the queue holds about one deadline's worth of submits at most.
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now_ms or deadlines[0][1] not in self._submits):
            _, ticket = deadlines.popleft()
            submit = self._submits.get(ticket)
            if submit is not None:
                self._resolve(
                    submit,
                    GaveUp(
                        f"no outcome for {submit.request_id} within {self._config.deadline_ms} ms"
                    ),
                )

    def _wake_at(self) -> int | None:
        retry_ms = self._retries[0][0] if self._retries else None
        deadline_ms = self._deadlines[0][0] if self._deadlines else None
        if retry_ms is None or deadline_ms is None:
            return deadline_ms if retry_ms is None else retry_ms
        return min(retry_ms, deadline_ms)

    def _part_done(self, part: _Part, outcome: core.Outcome) -> None:
        submit = part.submit
        if part.outcome is None:
            submit.waiting_for -= 1
        part.outcome = outcome
        if submit.waiting_for:
            return
        if len(submit.parts) == 1:
            self._resolve(submit, outcome)
        else:
            self._resolve(
                submit, combine([p.outcome for p in submit.parts if p.outcome is not None])
            )

    def _resolve(self, submit: _Submit, result: core.Outcome | GaveUp | BadRequest) -> None:
        if submit.done:
            return
        submit.done = True
        # Parts point at their submit: emptying its list leaves no cycle, so
        # reference counting frees both (thousands a second, no cyclic GC).
        submit.parts.clear()
        del self._submits[submit.ticket]
        self._resolved.append(Resolved(submit.ticket, result))


def combine(outcomes: Sequence[core.Outcome]) -> core.Outcome:
    """One outcome from every partition's outcome of one market command, in
    partition order: the first rejection, or the sum of the settlements, or
    the feed cursor every partition has reached (resume-safe)."""
    for outcome in outcomes:
        if isinstance(outcome, core.Rejected):
            return outcome
    first = outcomes[0]
    assert isinstance(first, core.Accepted)
    if len(outcomes) == 1:
        return first
    results = [o.result for o in outcomes if isinstance(o, core.Accepted)]
    if isinstance(first.result, SettlementReply):
        settlements = [r for r in results if isinstance(r, SettlementReply)]
        return core.Accepted(
            events=(),
            result=SettlementReply(
                market_id=first.result.market_id,
                status=first.result.status,
                bets_affected=sum(r.bets_affected for r in settlements),
                paid_minor=sum(r.paid_minor for r in settlements),
            ),
        )
    if isinstance(first.result, FeedReply):
        feeds = [r for r in results if isinstance(r, FeedReply)]
        return core.Accepted(
            events=(),
            result=FeedReply(
                producer=first.result.producer,
                cursor=min(r.cursor for r in feeds),
                applied=max(r.applied for r in feeds),
                skipped=max(r.skipped for r in feeds),
            ),
        )
    return first
