"""The history checker: do a run's log, what its clients heard and read, and
its replicas' final states tell one consistent, durable story?

One checker for every run: the simulator (`replication.sim`), `ironbook
chaos`, `ironbook check` and `ironbook demo`. Pure: it is handed the
operations (`replication.history.Operation`), the log entries and the
replicas' state hashes; reading them from NATS and files is the caller's.

- the log is contiguous from 1 and the batch ids of the entries replay
  does not quarantine are unique; replay follows the fold rule
  (`replication.batch`: entries decided on a lost predecessor are void,
  foreign ones (undecodable, or not signed by the partition's key when a
  `verifier` is given) are quarantined);
- every `ok` operation is in the log exactly once, and so is every `fail`
  whose refusal came from the ledger (its `CommandRejected` record); a
  `fail` left no other effect; every `info` is there at most once
  (counted: applied or absent);
- no request id has events in two log entries (`duplicated`; each slice of
  a market result counts on its own, see `record_key`);
- what each client heard equals the reply the log recorded, and every client
  that heard about one request id heard the same;
- money is conserved at every log position: all balances sum to 0 and
  deposits - withdrawals = players + stakes held + house;
- no player balance is negative at any log position;
- the core's full invariants hold every `full_invariants_every` entries and
  at the end;
- every replica's state hash equals the hash of replaying the log;
- a balance a client read equals the account's balance at some log position
  no older than the newest one that client had already seen (its own
  completed operations and earlier reads), and no newer than the operations
  invoked before the read returned;
- a read model folded from the log (a `LogFold`, such as the gateway's
  history projection), if given, agrees with it.

A run that lost its primary site and went on against a promoted DR site
(`ironbook dr drill`) is judged against the DR site's log, which holds the
lost site's entries only as far as its mirror had copied them. With a
`SiteLoss`, an operation acknowledged before the promotion began (so by the
lost site: the DR site acknowledges nothing before) and after the last entry
the DR site holds from it was decided, and missing from the log, is counted
and listed as lost with the site (`rpo_acked_lost`), not reported as a `lost`
violation; one acknowledged earlier (its entry would lie inside what the DR
site copied) or after the promotion began, and missing, is still `lost`,
and every other rule holds as always. A balance read served by the lost site
after the last entry the DR site holds from it was written may show entries
that never reached the DR site: such a read that no position of the log
explains is counted (`rpo_window_reads`), not reported as `stale_read`;
earlier reads are judged as always.

A violation names the operations (request id, client, times) and the log
positions involved.

`core.check_invariants` walks every bet, so running it after every entry is
quadratic in a run's length (a 120 s chaos run, ~10k entries and ~100k bets,
did not finish checking in 5 minutes). One replay checks money and negative
balances incrementally at every entry and the full invariants every
`full_invariants_every` entries (the simulator's short logs: every entry).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from ironbook import core
from ironbook.core.events import Deposited, Refusal, Withdrawn
from ironbook.core.state import SYSTEM_PREFIX
from ironbook.replication.batch import ReplayState
from ironbook.replication.history import Operation
from ironbook.replication.interfaces import LogEntry, Verifier

Verdict = Literal["pass", "fail"]

MAX_VIOLATIONS_PER_KIND = 10
FULL_INVARIANTS_EVERY = 500
_EVENT_BITS = 24
# A point is one event's place in the log: (seq << _EVENT_BITS) | event index.
# A read is decided between two commands of one batch, so it may see a state
# that exists only between two events of one entry.


def _point(seq: int, event_index: int) -> int:
    return (seq << _EVENT_BITS) | event_index


def _seq_of(point: int) -> int:
    return point >> _EVENT_BITS


def _entry_end(seq: int) -> int:
    return _point(seq + 1, 0) - 1


class Violation(msgspec.Struct, frozen=True):
    kind: str
    """lost, duplicated, rejection_applied, outcome_mismatch,
    inconsistent_replies, conservation, negative_balance, invariant,
    replicas_disagree, stale_read, log_shape, replay_failed or
    projection_mismatch (the simulator adds liveness, replica_failed and
    bad_request)."""
    detail: str
    request_ids: list[str] = msgspec.field(default_factory=list)
    seqs: list[int] = msgspec.field(default_factory=list)
    """Log positions (stream sequences) involved."""
    at_ms: int | None = None
    """Log time (the leader's clock) of the first of `seqs` that holds
    events: places a violation without client operations against the fault
    timeline."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class LogFold(Protocol):
    """A read model that must equal a fold of the log (the gateway's history
    projection): fed the events of every applied entry in order, then asked
    how what it read differs from what it folded."""

    def apply(self, seq: int, events: Sequence[core.AnyEvent]) -> None: ...

    def differences(
        self, last_seq: int, ledger_balances: Mapping[str, int]
    ) -> list[tuple[str, list[int]]]:
        """(detail, log positions involved) for each difference; empty if it agrees."""
        ...


class SiteLoss(msgspec.Struct, frozen=True):
    """The run lost its primary site and its DR site was promoted: the log
    judged is the DR site's, the lost site's log up to `kept_seq`, then its own."""

    acks_before_ms: int
    """Wall time the promotion began: an acknowledgement heard before it came
    from the lost site, and may be missing from the log (lost with the site)."""
    kept_seq: int
    """The last entry of the lost site's log the DR site holds (0: none)."""


class RpoLoss(msgspec.Struct, frozen=True):
    """An operation the lost site acknowledged that the DR site's log lacks."""

    request_id: str
    kind: str
    client: str
    outcome: str
    """`ok`, or `fail`: a refusal the lost site logged and answered."""
    acked_wall_ms: int


class CheckReport(msgspec.Struct):
    verdict: Verdict
    ops: int
    ok: int
    fail: int
    info: int
    reads: int
    info_applied: int
    """`info` operations the log shows applied (or logged as rejected)."""
    info_absent: int
    """`info` operations the log does not have: they never happened."""
    lost: int
    duplicated: int
    conserved: bool
    no_negative_balance: bool
    replicas_agree: bool
    reads_consistent: bool
    log_entries: int
    void_entries: int
    replica_hashes: dict[str, str]
    log_hash: str | None
    violations: list[Violation]
    violation_counts: dict[str, int]
    projection_agrees: bool | None = None
    """The read model equals a fold of the log (None: none was given)."""
    quarantined_entries: int = 0
    """Foreign entries replay skipped (undecodable, or badly signed)."""
    rpo_acked_lost: int = 0
    """With a `SiteLoss`: operations the lost site acknowledged that the log
    lacks (not violations; listed in `rpo_lost`)."""
    rpo_lost: list[RpoLoss] = msgspec.field(default_factory=list)
    rpo_window_reads: int = 0
    """With a `SiteLoss`: reads served by the lost site after the last entry
    the DR site holds from it, that no log position explains (not violations)."""


@dataclass(slots=True)
class _Record:
    seqs: list[int] = field(default_factory=list)
    events: list[core.AnyEvent] = field(default_factory=list)
    last_point: int = 0

    @property
    def rejected_only(self) -> bool:
        return all(isinstance(e, core.CommandRejected) for e in self.events)


@dataclass(slots=True)
class _Replay:
    records: dict[str, _Record] = field(default_factory=dict)
    balances: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    """account -> (points, balance after that event), for every event that moved it."""
    final_hash: str | None = None
    void_entries: int = 0
    quarantined_entries: int = 0
    net_deposits_minor: int = 0
    """Deposits - withdrawals so far."""
    running: dict[str, int] = field(default_factory=dict)
    """account -> balance so far."""
    at_ms: dict[int, int] = field(default_factory=dict)
    """seq -> log time of its first event (applied entries)."""


class _Violations:
    def __init__(self) -> None:
        self.found: list[Violation] = []
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, violation: Violation) -> None:
        self.counts[violation.kind] += 1
        if self.counts[violation.kind] <= MAX_VIOLATIONS_PER_KIND:
            self.found.append(violation)


def _describe(op: Operation) -> str:
    return (
        f"{op.request_id} ({op.kind} by {op.client}, {op.outcome}, "
        f"invoked {op.invoke_wall_ms} ms, completed {op.complete_wall_ms} ms)"
    )


def check_history(
    operations: Sequence[Operation],
    entries: Sequence[LogEntry],
    replica_hashes: Mapping[str, str],
    *,
    expected_replicas: Sequence[str] = (),
    ledger_config: core.LedgerConfig | None = None,
    read_model: LogFold | None = None,
    full_invariants_every: int = FULL_INVARIANTS_EVERY,
    verifier: Verifier | None = None,
    site_loss: SiteLoss | None = None,
) -> CheckReport:
    """The verdict on one run. `expected_replicas` names replicas that must
    have reported a hash (a missing one means they do not agree);
    `read_model`, if given, must equal a fold of the log; `site_loss`: the
    log is a promoted DR site's (see the module's docstring)."""
    violations = _Violations()
    replay = _replay(
        entries, ledger_config, violations, read_model, full_invariants_every, verifier
    )
    if read_model is not None:
        _check_read_model(read_model, replay, len(entries), violations)
    _check_replies(operations, replay, violations)
    rpo_lost: list[RpoLoss] = []
    window = _rpo_window(site_loss, replay)
    lost, duplicated, info_applied, info_absent = _check_operations(
        operations, replay, violations, window, rpo_lost
    )
    replicas_agree = _check_replicas(replica_hashes, expected_replicas, replay, violations)
    rpo_window_reads = _check_reads(operations, replay, violations, window)
    counts = dict(violations.counts)
    commands = [op for op in operations if not op.is_query]
    return CheckReport(
        verdict="pass" if not counts else "fail",
        ops=len(operations),
        ok=sum(op.outcome == "ok" for op in commands),
        fail=sum(op.outcome == "fail" for op in commands),
        info=sum(op.outcome == "info" for op in commands),
        reads=sum(op.is_query for op in operations),
        info_applied=info_applied,
        info_absent=info_absent,
        lost=lost,
        duplicated=duplicated,
        conserved=not (counts.get("conservation") or counts.get("invariant")),
        no_negative_balance="negative_balance" not in counts,
        replicas_agree=replicas_agree,
        reads_consistent="stale_read" not in counts,
        log_entries=len(entries),
        void_entries=replay.void_entries,
        quarantined_entries=replay.quarantined_entries,
        replica_hashes=dict(replica_hashes),
        log_hash=replay.final_hash,
        violations=[_placed(v, replay.at_ms) for v in violations.found],
        violation_counts=counts,
        projection_agrees=None if read_model is None else "projection_mismatch" not in counts,
        rpo_acked_lost=len(rpo_lost),
        rpo_lost=rpo_lost,
        rpo_window_reads=rpo_window_reads,
    )


def _rpo_window(site_loss: SiteLoss | None, replay: _Replay) -> tuple[int, int] | None:
    """(from, to) wall ms in which the lost site may have acknowledged, or
    served a read of, entries the DR site never got: from the log time of the
    last entry it holds from the lost site (the leader decided every later
    one after it, and acknowledged it later still) to the promotion's start.
    None without a site loss, or when the DR site holds nothing of the lost
    site's log (then nothing bounds the window, and nothing is excused)."""
    if site_loss is None or site_loss.kept_seq < 1:
        return None
    kept_ms = [at_ms for seq, at_ms in replay.at_ms.items() if seq <= site_loss.kept_seq]
    if not kept_ms:
        return None
    return (max(kept_ms), site_loss.acks_before_ms)


def _placed(violation: Violation, at_ms: Mapping[int, int]) -> Violation:
    """`violation` with the log time of its first log position that has one."""
    known = [at_ms[seq] for seq in violation.seqs if seq in at_ms]
    if violation.at_ms is not None or not known:
        return violation
    return msgspec.structs.replace(violation, at_ms=known[0])


def replay_hash(
    entries: Sequence[LogEntry],
    ledger_config: core.LedgerConfig | None = None,
    *,
    verifier: Verifier | None = None,
) -> str | None:
    """The state hash of replaying `entries`, or None if replay fails."""
    replay = _replay(entries, ledger_config, _Violations(), None, FULL_INVARIANTS_EVERY, verifier)
    return replay.final_hash


def _check_read_model(
    read_model: LogFold, replay: _Replay, last_seq: int, violations: _Violations
) -> None:
    ledger_balances = {
        account: balances[-1]
        for account, (_, balances) in replay.balances.items()
        if not account.startswith(SYSTEM_PREFIX)
    }
    for detail, seqs in read_model.differences(last_seq, ledger_balances):
        violations.add(Violation("projection_mismatch", detail, seqs=seqs))


def _check_replies(
    operations: Sequence[Operation], replay: _Replay, violations: _Violations
) -> None:
    """What each client heard equals what the log recorded for that request
    id, and every client that heard about one request id heard the same."""
    first_heard: dict[str, Operation] = {}
    for op in operations:
        if op.is_query or not op.reply_hex:
            continue
        earlier = first_heard.setdefault(op.request_id, op)
        if earlier.reply_hex != op.reply_hex:
            violations.add(
                Violation(
                    "inconsistent_replies",
                    f"{_describe(earlier)} and {_describe(op)} heard different replies",
                    [op.request_id],
                )
            )
        record = replay.records.get(op.request_id)
        outcome = op.core_outcome()
        if record is None or outcome is None:
            continue  # lost or never logged: judged in _check_operations
        logged = [r for r in (getattr(e, "reply", None) for e in record.events) if r]
        if not logged:
            continue
        heard = outcome.refusal if isinstance(outcome, core.Rejected) else outcome.result
        if isinstance(outcome, core.Rejected) and isinstance(logged[-1], Refusal):
            same = logged[-1].code == outcome.code
        else:
            same = logged[-1] == heard
        if not same:
            violations.add(
                Violation(
                    "outcome_mismatch",
                    f"{_describe(op)} heard {heard!r}, the log recorded {logged[-1]!r}",
                    [op.request_id],
                    record.seqs,
                )
            )


def _replay(
    entries: Sequence[LogEntry],
    ledger_config: core.LedgerConfig | None,
    violations: _Violations,
    fold: LogFold | None,
    full_invariants_every: int,
    verifier: Verifier | None,
) -> _Replay:
    result = _Replay()
    replay = ReplayState.empty(ledger_config, verifier=verifier)
    conserved = True
    batch_seqs: dict[str, int] = {}
    invariants_hold = True
    for entry in entries:
        if entry.seq != replay.applied_seq + 1:
            violations.add(
                Violation(
                    "log_shape",
                    f"entry {replay.applied_seq + 1} has seq {entry.seq}",
                    seqs=[entry.seq],
                )
            )
            return result
        quarantined = replay.quarantined
        try:
            events = replay.apply(entry)
        except Exception as error:  # the checker reports, it does not crash
            violations.add(
                Violation(
                    "replay_failed",
                    f"seq {entry.seq}: {type(error).__name__}: {error}",
                    seqs=[entry.seq],
                )
            )
            return result
        if replay.quarantined > quarantined:
            result.quarantined_entries += 1
        else:
            first_seq = batch_seqs.setdefault(entry.batch_id, entry.seq)
            if first_seq != entry.seq:
                violations.add(
                    Violation(
                        "log_shape",
                        f"batch id {entry.batch_id} at seq {first_seq} and {entry.seq}",
                        seqs=[first_seq, entry.seq],
                    )
                )
        if invariants_hold and entry.seq % full_invariants_every == 0:
            invariants_hold = _invariants_hold(replay.state, entry.seq, violations)
        if events is None:
            if replay.quarantined == quarantined:
                result.void_entries += 1
            continue
        if fold is not None:
            fold.apply(entry.seq, events)
        if events:
            result.at_ms[entry.seq] = events[0].at_ms
        touched = _record_events(result, entry.seq, events)
        _check_negative(replay.state, touched, entry.seq, events, violations)
        if conserved:
            conserved = _conserved(replay.state, result.net_deposits_minor, entry.seq, violations)
    if invariants_hold:
        _invariants_hold(replay.state, replay.applied_seq, violations)
    result.final_hash = core.state_hash(replay.state)
    return result


def _record_events(result: _Replay, seq: int, events: Sequence[core.AnyEvent]) -> set[str]:
    """Note each event under its `record_key` and each posting in its
    account's balance history; the accounts touched."""
    touched: set[str] = set()
    for index, event in enumerate(events):
        record = result.records.setdefault(record_key(event), _Record())
        if not record.seqs or record.seqs[-1] != seq:
            record.seqs.append(seq)
        record.events.append(event)
        record.last_point = _point(seq, index)
        for account_id, amount_minor in event.postings:
            balance = result.running.get(account_id, 0) + amount_minor
            result.running[account_id] = balance
            points, balances = result.balances.setdefault(account_id, ([], []))
            points.append(record.last_point)
            balances.append(balance)
            touched.add(account_id)
        if isinstance(event, Deposited):
            result.net_deposits_minor += event.amount_minor
        elif isinstance(event, Withdrawn):
            result.net_deposits_minor -= event.amount_minor
    return touched


def _check_negative(
    state: core.LedgerState,
    touched: set[str],
    seq: int,
    events: Sequence[core.AnyEvent],
    violations: _Violations,
) -> None:
    for account_id in touched:
        account = state.accounts[account_id]
        if account.kind == "player" and account.balance_minor < 0:
            violations.add(
                Violation(
                    "negative_balance",
                    f"{account_id} balance {account.balance_minor} after seq {seq}",
                    [e.request_id for e in events],
                    [seq],
                )
            )


def _invariants_hold(state: core.LedgerState, seq: int, violations: _Violations) -> bool:
    problems = core.check_invariants(state)
    if problems:
        violations.add(
            Violation("invariant", f"after seq {seq}: {'; '.join(problems)}", seqs=[seq])
        )
    return not problems


def _conserved(
    state: core.LedgerState, net_deposits_minor: int, seq: int, violations: _Violations
) -> bool:
    total_minor = 0
    players_minor = 0
    for account in state.accounts.values():
        total_minor += account.balance_minor
        if account.kind == "player":
            players_minor += account.balance_minor
    held_minor = state.accounts[core.STAKES_HELD].balance_minor
    house_minor = state.accounts[core.HOUSE].balance_minor
    inside_minor = players_minor + held_minor + house_minor
    if total_minor == 0 and inside_minor == net_deposits_minor:
        return True
    violations.add(
        Violation(
            "conservation",
            f"after seq {seq}: balances sum to {total_minor}; deposits - withdrawals = "
            f"{net_deposits_minor} but players {players_minor} + stakes held {held_minor} "
            f"+ house {house_minor} = {inside_minor}",
            seqs=[seq],
        )
    )
    return False


def _lost_with_site(
    heard: Sequence[Operation], window: tuple[int, int] | None, rpo_lost: list[RpoLoss]
) -> bool:
    """Whether an acknowledged operation the log lacks was acknowledged by the
    lost site after the last entry the DR site holds from it (every client
    heard it within `_rpo_window`): then it goes to `rpo_lost`. One heard
    before that entry was decided is a real loss."""
    if window is None or not all(window[0] <= op.complete_wall_ms < window[1] for op in heard):
        return False
    first = heard[0]
    rpo_lost.append(
        RpoLoss(first.request_id, first.kind, first.client, first.outcome, first.complete_wall_ms)
    )
    return True


def _check_operations(
    operations: Sequence[Operation],
    replay: _Replay,
    violations: _Violations,
    window: tuple[int, int] | None,
    rpo_lost: list[RpoLoss],
) -> tuple[int, int, int, int]:
    """(lost, duplicated, info applied, info absent); what the lost site
    acknowledged and the log lacks goes to `rpo_lost` instead of `lost`."""

    lost = 0
    info_applied = 0
    info_absent = 0
    by_request: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        if not op.is_query:
            by_request[op.request_id].append(op)
    for request_id, ops in by_request.items():
        record = replay.records.get(request_id)
        outcomes = {op.outcome for op in ops}
        if "ok" in outcomes:
            heard = [op for op in ops if op.outcome == "ok"]
            if record is None and _lost_with_site(heard, window, rpo_lost):
                continue
            if record is None or record.rejected_only:
                lost += 1
                violations.add(
                    Violation(
                        "lost",
                        f"{_describe(heard[0])} was acknowledged but the log "
                        + ("has nothing" if record is None else "has only a rejection")
                        + (f" (seqs {record.seqs})" if record else ""),
                        [request_id],
                        record.seqs if record else [],
                    )
                )
        elif "fail" in outcomes:
            refused = [op for op in ops if op.outcome == "fail" and op.reply_hex]
            if record is None and refused and _lost_with_site(refused, window, rpo_lost):
                continue
            if record is None and refused:
                # The ledger logs a refusal before it answers (a retry must
                # hear the same one): a refusal heard but not logged was lost.
                lost += 1
                violations.add(
                    Violation(
                        "lost",
                        f"{_describe(refused[0])} was refused by the ledger but the log "
                        "has no record of the refusal",
                        [request_id],
                    )
                )
            elif record is not None and not record.rejected_only:
                violations.add(
                    Violation(
                        "rejection_applied",
                        f"{_describe(ops[0])} was refused but the log applied "
                        f"{[type(e).__name__ for e in record.events]}",
                        [request_id],
                        record.seqs,
                    )
                )
        elif record is None:
            info_absent += 1
        else:
            info_applied += 1
    duplicated = 0
    for request_id, record in replay.records.items():
        if len(record.seqs) > 1:
            duplicated += 1
            violations.add(
                Violation(
                    "duplicated",
                    f"{request_id} has events in log entries {record.seqs}",
                    [request_id],
                    record.seqs,
                )
            )
    return lost, duplicated, info_applied, info_absent


def _check_replicas(
    replica_hashes: Mapping[str, str],
    expected_replicas: Sequence[str],
    replay: _Replay,
    violations: _Violations,
) -> bool:
    agree = True
    missing = sorted(set(expected_replicas) - set(replica_hashes))
    if missing:
        agree = False
        violations.add(
            Violation("replicas_disagree", f"replicas {missing} reported no converged state hash")
        )
    if len(set(replica_hashes.values())) > 1 or (
        replay.final_hash is not None
        and any(h != replay.final_hash for h in replica_hashes.values())
    ):
        agree = False
        shown = {node: h[:12] for node, h in sorted(replica_hashes.items())}
        log_hash = (replay.final_hash or "?")[:12]
        violations.add(
            Violation("replicas_disagree", f"state hashes {shown}, log replay {log_hash}")
        )
    return agree


def _check_reads(
    operations: Sequence[Operation],
    replay: _Replay,
    violations: _Violations,
    rpo_window_ms: tuple[int, int] | None = None,
) -> int:
    """Judge every balance read; the reads excused because the lost site
    served them within `rpo_window_ms` (see `_rpo_window`)."""
    excused = 0
    position: dict[str, int] = {
        request_id: record.last_point for request_id, record in replay.records.items()
    }
    # Upper bound of a read: the newest log position of any operation invoked
    # before the read returned.
    invoked = sorted(
        (op.invoke_ns, _entry_end(_seq_of(position[op.request_id])))
        for op in operations
        if not op.is_query and op.request_id in position
    )
    invoke_times = [t for t, _ in invoked]
    newest_by_then: list[int] = []
    newest = 0
    for _, seq in invoked:
        newest = max(newest, seq)
        newest_by_then.append(newest)
    by_client: dict[str, list[Operation]] = defaultdict(list)
    for op in operations:
        by_client[op.client].append(op)
    for ops in by_client.values():
        ops.sort(key=lambda op: op.invoke_ns)
        seen = 0
        for op in ops:
            if not op.is_query:
                if op.outcome != "info" and op.request_id in position:
                    seen = max(seen, position[op.request_id])
                continue
            if op.outcome != "ok" or op.balance_minor is None:
                continue
            index = bisect.bisect_left(invoke_times, op.complete_ns)
            upper = newest_by_then[index - 1] if index else 0
            found = _position_with_balance(
                replay.balances.get(op.account_id, ([], [])), op.balance_minor, seen, upper
            )
            if found is None and rpo_window_ms is not None:
                window_from_ms, window_to_ms = rpo_window_ms
                if window_from_ms <= op.complete_wall_ms < window_to_ms:
                    excused += 1
                    continue
            if found is None:
                violations.add(
                    Violation(
                        "stale_read",
                        f"{_describe(op)} read {op.account_id} = {op.balance_minor}, a balance "
                        f"the account never had between seq {_seq_of(seen)} (already seen by "
                        f"{op.client}) and seq {_seq_of(upper)}",
                        [op.request_id],
                        [_seq_of(seen), _seq_of(upper)],
                    )
                )
            else:
                seen = max(seen, found)
    return excused


def _position_with_balance(
    history: tuple[list[int], list[int]], balance_minor: int, lower: int, upper: int
) -> int | None:
    """The first point in [lower, max(lower, upper)] at which the account's
    balance is `balance_minor`, or None."""
    seqs, balances = history
    upper = max(lower, upper)
    start = bisect.bisect_right(seqs, lower) - 1
    current = balances[start] if start >= 0 else 0
    if current == balance_minor:
        return lower
    for index in range(start + 1, len(seqs)):
        if seqs[index] > upper:
            break
        if balances[index] == balance_minor:
            return seqs[index]
    return None


def record_key(event: core.AnyEvent) -> str:
    """Under which key an event counts as applied once: its request id, but a
    market result's later slices sit in entries of their own, so each counts
    under its request id and where it starts (the first slice, which carries
    the reply, under the request id alone)."""
    if isinstance(event, core.events.MarketResulted) and event.slice_from:
        return f"{event.request_id}#{event.slice_from}"
    return event.request_id
