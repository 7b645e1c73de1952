"""The history checker: does a run's log, what its clients were told and the
replicas' final states tell one consistent, durable story?

A library API so the simulator and the chaos tooling (real processes, real
NATS) check runs the same way. Checks:

- the log is contiguous from 1, batch ids are unique, and every entry decodes;
- replaying it from empty (void entries skipped, see `replication.batch`)
  keeps the core's invariants at every position;
- no acknowledged command is lost: an accepted outcome has its events in the
  log, a rejected one has its `CommandRejected` record there;
- no command is applied twice: one request id's events sit in one entry
  (each slice of a market result counts on its own);
- a rejected command changed nothing: its only record is `CommandRejected`;
- what a client heard matches the log (and repeats of a request id agree);
- every replica's state hash equals the hash of the replayed log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ironbook import core
from ironbook.replication.batch import ReplayState
from ironbook.replication.interfaces import LogEntry


@dataclass(frozen=True, slots=True)
class Observation:
    """One outcome a client received for a request id."""

    request_id: str
    outcome: core.Outcome
    client: str = ""


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    """lost_ack, applied_twice, rejection_applied, outcome_mismatch,
    inconsistent_replies, divergence, invariant, log_shape or replay_failed."""
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(slots=True)
class _Record:
    seqs: list[int]
    events: list[core.AnyEvent]


class Checker:
    def __init__(
        self, ledger_config: core.LedgerConfig | None = None, *, max_violations: int = 20
    ) -> None:
        self._ledger_config = ledger_config
        self._max_violations = max_violations

    def check(
        self,
        entries: Sequence[LogEntry],
        observations: Sequence[Observation],
        replica_hashes: Mapping[str, str],
    ) -> list[Violation]:
        """Every violation found (at most `max_violations`), empty if none."""
        violations: list[Violation] = []
        records, final_hash = self._replay(entries, violations)
        self._check_observations(records, observations, violations)
        self._check_applied_once(records, violations)
        if final_hash is not None:
            for replica, replica_hash in replica_hashes.items():
                if replica_hash != final_hash:
                    violations.append(
                        Violation(
                            "divergence",
                            f"replica {replica} hash {replica_hash[:12]} != log replay "
                            f"{final_hash[:12]} ({len(entries)} entries)",
                        )
                    )
        return violations[: self._max_violations]

    def replay_hash(self, entries: Sequence[LogEntry]) -> str | None:
        """The state hash of replaying `entries`, or None if replay fails."""
        return self._replay(entries, [])[1]

    def _replay(
        self, entries: Sequence[LogEntry], violations: list[Violation]
    ) -> tuple[dict[str, _Record], str | None]:
        records: dict[str, _Record] = {}
        replay = ReplayState.empty(self._ledger_config)
        batch_seqs: dict[str, int] = {}
        invariant_broken = False
        for position, entry in enumerate(entries, start=1):
            if entry.seq != position:
                violations.append(Violation("log_shape", f"entry {position} has seq {entry.seq}"))
                return records, None
            first_seq = batch_seqs.setdefault(entry.batch_id, entry.seq)
            if first_seq != entry.seq:
                violations.append(
                    Violation(
                        "log_shape",
                        f"batch id {entry.batch_id} at seq {first_seq} and {entry.seq}",
                    )
                )
            try:
                events = replay.apply(entry)
            except Exception as error:  # the checker reports, it does not crash
                violations.append(
                    Violation("replay_failed", f"seq {entry.seq}: {type(error).__name__}: {error}")
                )
                return records, None
            if events is None:
                continue
            for event in events:
                key = record_key(event)
                record = records.get(key)
                if record is None:
                    records[key] = _Record([entry.seq], [event])
                else:
                    if record.seqs[-1] != entry.seq:
                        record.seqs.append(entry.seq)
                    record.events.append(event)
            if not invariant_broken:
                problems = core.check_invariants(replay.state)
                if problems:
                    invariant_broken = True
                    violations.append(
                        Violation("invariant", f"after seq {entry.seq}: {'; '.join(problems)}")
                    )
        return records, core.state_hash(replay.state)

    @staticmethod
    def _check_applied_once(records: Mapping[str, _Record], violations: list[Violation]) -> None:
        for request_id, record in records.items():
            if len(record.seqs) > 1:
                violations.append(
                    Violation(
                        "applied_twice",
                        f"{request_id} has events in entries {record.seqs}",
                    )
                )

    @staticmethod
    def _check_observations(
        records: Mapping[str, _Record],
        observations: Sequence[Observation],
        violations: list[Violation],
    ) -> None:
        first_heard: dict[str, bytes] = {}
        for observation in observations:
            request_id = observation.request_id
            outcome = observation.outcome
            heard = core.encode_outcome(outcome)
            earlier = first_heard.setdefault(request_id, heard)
            if earlier != heard:
                violations.append(
                    Violation(
                        "inconsistent_replies",
                        f"{request_id}: {observation.client} heard {outcome!r}, "
                        "another reply said otherwise",
                    )
                )
            record = records.get(request_id)
            if record is None:
                violations.append(
                    Violation(
                        "lost_ack", f"{request_id}: client heard {outcome!r}, log has nothing"
                    )
                )
                continue
            rejections = [e for e in record.events if isinstance(e, core.CommandRejected)]
            replies = [r for r in (getattr(e, "reply", None) for e in record.events) if r]
            if isinstance(outcome, core.Rejected):
                if len(rejections) != len(record.events):
                    violations.append(
                        Violation(
                            "rejection_applied",
                            f"{request_id}: rejected ({outcome.code}) but the log applied "
                            f"{[type(e).__name__ for e in record.events]}",
                        )
                    )
                elif rejections[-1].reply.code != outcome.code:
                    violations.append(
                        Violation(
                            "outcome_mismatch",
                            f"{request_id}: heard {outcome.code}, "
                            f"logged {rejections[-1].reply.code}",
                        )
                    )
            elif rejections:
                violations.append(
                    Violation(
                        "outcome_mismatch",
                        f"{request_id}: heard accepted, logged {rejections[-1].reply.code}",
                    )
                )
            elif replies and replies[-1] != outcome.result:
                violations.append(
                    Violation(
                        "outcome_mismatch",
                        f"{request_id}: heard {outcome.result!r}, logged {replies[-1]!r}",
                    )
                )


def record_key(event: core.AnyEvent) -> str:
    """Under which key an event counts as applied once: its request id, but a
    market result's later slices sit in entries of their own, so each counts
    under its request id and where it starts (the first slice, which carries
    the reply, under the request id alone)."""
    if isinstance(event, core.events.MarketResulted) and event.slice_from:
        return f"{event.request_id}#{event.slice_from}"
    return event.request_id
