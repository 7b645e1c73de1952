"""The history checker on hand-made histories of one correct sequencer (the
rules the simulator depends on): it passes a good one and names each kind of
violation."""

from __future__ import annotations

from ironbook import core
from ironbook.core import acting, issued
from ironbook.replication.batch import decode_batch, encode_batch, encode_signed_batch
from ironbook.replication.checker import Violation, check_history
from ironbook.replication.history import Operation, answered
from ironbook.replication.interfaces import LogEntry
from ironbook.replication.sim.signing import MacSigner

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


class History:
    """A log written by one correct sequencer, one command per batch."""

    def __init__(self) -> None:
        self.state = core.new_state()
        self.entries: list[LogEntry] = []
        self.heard: list[Operation] = []
        self._prev = ""

    def run(self, command: core.AnyCommand) -> core.Outcome:
        outcome = core.decide(self.state, issued(command, PEOPLE), 1_000 + len(self.entries))
        for event in outcome.events:
            core.apply(self.state, event)
        self.append(list(outcome.events))
        self.hear(command, outcome)
        return outcome

    def hear(self, command: core.AnyCommand, outcome: core.Outcome) -> None:
        at_ns = len(self.heard) * 1_000_000
        self.heard.append(
            answered(
                "client",
                command,
                outcome,
                invoke_ns=at_ns,
                complete_ns=at_ns + 1,
                invoke_wall_ms=at_ns // 1_000_000,
                complete_wall_ms=at_ns // 1_000_000,
            )
        )

    def append(self, events: list[core.AnyEvent], *, prev: str | None = None) -> None:
        seq = len(self.entries) + 1
        batch_id = f"1:{seq}"
        payload = encode_batch(self._prev if prev is None else prev, events)
        self.entries.append(LogEntry(seq=seq, batch_id=batch_id, payload=payload))
        if prev is None:
            self._prev = batch_id

    def check(self, hashes: dict[str, str] | None = None) -> list[Violation]:
        replicas = {"r0": core.state_hash(self.state)} if hashes is None else hashes
        report = check_history(self.heard, self.entries, replicas, full_invariants_every=1)
        return report.violations


def _kinds(violations: list[Violation]) -> list[str]:
    return [v.kind for v in violations]


def _funded() -> History:
    history = History()
    history.run(core.OpenAccount(request_id="open", account_id="alice"))
    history.run(
        core.Deposit(request_id="dep", account_id="alice", amount_minor=1_000, reason="test top-up")
    )
    return history


def test_a_correct_history_passes() -> None:
    history = _funded()
    history.run(core.Withdraw(request_id="too-much", account_id="alice", amount_minor=5_000))
    history.run(core.Withdraw(request_id="ok", account_id="alice", amount_minor=400))
    assert history.heard[2].outcome == "fail"
    assert history.check() == []


def test_an_acknowledged_command_missing_from_the_log_is_lost() -> None:
    history = _funded()
    ghost = core.Accepted(events=(), result=history.heard[1].core_outcome().result)  # type: ignore[union-attr]
    history.hear(
        core.Deposit(
            request_id="ghost", account_id="alice", amount_minor=1_000, reason="test top-up"
        ),
        ghost,
    )
    assert _kinds(history.check()) == ["lost"]


def test_a_refusal_missing_from_the_log_is_lost() -> None:
    # The ledger logs a refusal before it answers, so a retry hears it again.
    history = _funded()
    refused = core.Rejected(code="insufficient_funds", message="no")
    history.hear(core.Withdraw(request_id="gone", account_id="alice", amount_minor=9), refused)
    assert _kinds(history.check()) == ["lost"]


def test_a_command_in_two_entries_was_applied_twice() -> None:
    history = _funded()
    deposit = core.decide(
        core.new_state(),
        issued(
            core.Deposit(
                request_id="dep", account_id="alice", amount_minor=1_000, reason="test top-up"
            ),
            PEOPLE,
        ),
        2_000,
    )
    # Decided by a second leader that had not seen the first deposit.
    history.append(list(deposit.events))
    assert "duplicated" in _kinds(history.check(hashes={}))


def test_a_rejected_command_must_change_nothing() -> None:
    history = _funded()
    refused = core.Rejected(code="insufficient_funds", message="no")
    history.hear(
        core.Deposit(
            request_id="dep", account_id="alice", amount_minor=1_000, reason="test top-up"
        ),
        refused,
    )
    kinds = _kinds(history.check())
    assert "outcome_mismatch" in kinds  # the log applied it
    assert "inconsistent_replies" in kinds


def test_a_replica_with_another_state_diverged() -> None:
    history = _funded()
    kinds = _kinds(history.check(hashes={"r0": core.state_hash(core.new_state())}))
    assert kinds == ["replicas_disagree"]


def test_an_entry_decided_on_a_lost_predecessor_is_void() -> None:
    history = _funded()
    stray = core.decide(
        history.state,
        issued(core.Withdraw(request_id="stray", account_id="alice", amount_minor=1), PEOPLE),
        3_000,
    )
    history.append(list(stray.events), prev="9:9")
    # The void entry changed nothing, so the replica state (without it) matches...
    assert history.check() == []
    # ...and a client told it was accepted was told wrongly.
    history.hear(core.Withdraw(request_id="stray", account_id="alice", amount_minor=1), stray)
    assert _kinds(history.check()) == ["lost"]


def test_an_invariant_broken_mid_log_is_reported_at_its_position() -> None:
    history = _funded()
    bad = core.Deposit(request_id="bad", account_id="alice", amount_minor=1, reason="test top-up")
    deposit = core.decide(history.state, issued(bad, PEOPLE), 4_000)
    event = deposit.events[0]
    forged = type(event)(  # money moved into stakes held with no bet behind it
        **{
            **{f: getattr(event, f) for f in event.__struct_fields__},
            "postings": ((core.STAKES_HELD, 500), (core.HOUSE, -500)),
        }
    )
    history.append([forged])
    violations = history.check(hashes={})
    assert _kinds(violations) == ["invariant", "conservation"]
    assert all("after seq 3" in violation.detail for violation in violations)
    # Placed in time by the log: the entry's events carry the leader's clock.
    assert [violation.at_ms for violation in violations] == [4_000, 4_000]


def test_a_log_with_a_hole_is_malformed() -> None:
    history = _funded()
    history.entries[1] = LogEntry(seq=3, batch_id="1:3", payload=history.entries[1].payload)
    assert _kinds(history.check())[0] == "log_shape"


def test_foreign_entries_are_counted_and_only_a_trusting_replay_applies_them() -> None:
    """With the partition's key the checker skips what the replicas skip (a
    forged repeat of the last deposit, garbage, and an entry whose batch id
    repeats an applied one); replaying without the key applies the forgery,
    and the replicas' hash no longer matches."""
    history = _funded()
    key = MacSigner(b"the replicas' key")
    forged = encode_signed_batch(
        MacSigner(b"another key"),
        "s9:1",
        history._prev,
        decode_batch(history.entries[-1].payload).events,
    )
    for payload, batch_id in ((forged, "s9:1"), (b"\x00junk", "1:1")):
        history.entries.append(LogEntry(len(history.entries) + 1, batch_id, payload))
    replicas = {"r0": core.state_hash(history.state)}
    report = check_history(history.heard, history.entries, replicas, verifier=key)
    assert report.violations == []
    assert (report.quarantined_entries, report.void_entries) == (2, 0)
    trusting = check_history(history.heard, history.entries, replicas)
    assert set(_kinds(trusting.violations)) == {"duplicated", "replicas_disagree"}
