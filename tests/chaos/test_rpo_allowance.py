"""The checker's allowance for a lost site (`SiteLoss`): what site A
acknowledged and site B's log lacks is counted and listed, not a violation;
what site B acknowledged and lacks is still `lost`; every other rule holds."""

from __future__ import annotations

import copy

from ironbook import core
from ironbook.core import acting, issued
from ironbook.replication.batch import encode_batch
from ironbook.replication.checker import CheckReport, SiteLoss, check_history
from ironbook.replication.history import Operation, answered
from ironbook.replication.interfaces import LogEntry

PEOPLE = acting("test")
PROMOTED_AT_MS = 2_000
"""Site B's promotion began here: every earlier acknowledgement came from site A."""


class SitePair:
    """Site B's log: site A's first entries (what its mirror copied), then
    B's own; and what the clients heard from either, at given wall times."""

    def __init__(self) -> None:
        self.state = core.new_state()
        self.entries: list[LogEntry] = []
        self.heard: list[Operation] = []
        self._prev = ""

    def logged(self, command: core.AnyCommand, at_ms: int) -> core.Outcome:
        """Decided at `at_ms`, in B's log, heard by its client 1 ms later."""
        outcome = core.decide(self.state, issued(command, PEOPLE), at_ms)
        for event in outcome.events:
            core.apply(self.state, event)
        self.append(list(outcome.events))
        self.hear(command, outcome, at_ms + 1)
        return outcome

    def lost_with_site_a(self, command: core.AnyCommand, at_ms: int) -> core.Outcome:
        """Decided, logged and acknowledged by site A; never reached B."""
        outcome = core.decide(copy.deepcopy(self.state), issued(command, PEOPLE), at_ms)
        self.hear(command, outcome, at_ms + 1)
        return outcome

    def hear(
        self, command: core.AnyCommand | core.AnyQuery, outcome: core.Outcome, at_ms: int
    ) -> None:
        self.heard.append(
            answered(
                "c0",
                command,
                outcome,
                invoke_ns=(at_ms - 1) * 1_000_000,
                complete_ns=at_ms * 1_000_000,
                invoke_wall_ms=at_ms - 1,
                complete_wall_ms=at_ms,
            )
        )

    def append(self, events: list[core.AnyEvent]) -> None:
        seq = len(self.entries) + 1
        batch_id = f"1:{seq}"
        self.entries.append(LogEntry(seq, batch_id, encode_batch(self._prev, events)))
        self._prev = batch_id

    def check(self, site_loss: SiteLoss | None) -> CheckReport:
        hashes = {"r1": core.state_hash(self.state)}
        return check_history(
            self.heard, self.entries, hashes, expected_replicas=["r1"], site_loss=site_loss
        )


def _deposit(request_id: str, amount_minor: int) -> core.Deposit:
    return core.Deposit(
        request_id=request_id, account_id="alice", amount_minor=amount_minor, reason="top-up"
    )


def _site_a_then_b() -> tuple[SitePair, SiteLoss]:
    """Alice opened and funded on A (both mirrored to B), a deposit A
    acknowledged that B never got, then a deposit on B after the promotion."""
    pair = SitePair()
    pair.logged(core.OpenAccount(request_id="open", account_id="alice"), 1_000)
    pair.logged(_deposit("dep", 1_000), 1_010)
    kept_seq = len(pair.entries)
    pair.lost_with_site_a(_deposit("lost-dep", 100), 1_020)
    pair.logged(_deposit("b-dep", 5), 2_100)
    return pair, SiteLoss(acks_before_ms=PROMOTED_AT_MS, kept_seq=kept_seq)


def test_an_op_site_a_acknowledged_and_b_lacks_is_counted_not_lost() -> None:
    pair, loss = _site_a_then_b()
    report = pair.check(loss)
    assert report.verdict == "pass", report.violations
    assert report.lost == 0 and report.rpo_acked_lost == 1
    assert [(r.request_id, r.outcome, r.acked_wall_ms) for r in report.rpo_lost] == [
        ("lost-dep", "ok", 1_021)
    ]
    # Without the allowance the same history is a lost acknowledged write.
    plain = pair.check(None)
    assert plain.verdict == "fail" and plain.lost == 1 and plain.rpo_acked_lost == 0


def test_a_refusal_site_a_logged_and_b_lacks_is_counted_too() -> None:
    pair, loss = _site_a_then_b()
    refused = pair.lost_with_site_a(
        core.Withdraw(request_id="too-much", account_id="alice", amount_minor=99_999), 1_030
    )
    assert isinstance(refused, core.Rejected)
    report = pair.check(loss)
    assert report.verdict == "pass", report.violations
    assert sorted(r.request_id for r in report.rpo_lost) == ["lost-dep", "too-much"]


def test_an_op_site_b_acknowledged_and_lacks_is_lost() -> None:
    pair, loss = _site_a_then_b()
    pair.lost_with_site_a(_deposit("after-promotion", 7), 2_200)
    report = pair.check(loss)
    assert report.verdict == "fail"
    assert report.lost == 1 and report.rpo_acked_lost == 1
    assert [v.request_ids for v in report.violations if v.kind == "lost"] == [["after-promotion"]]


def test_a_duplicate_is_a_violation_with_the_allowance() -> None:
    pair, loss = _site_a_then_b()
    before = copy.deepcopy(pair.state)
    pair.logged(_deposit("b-dep-2", 5), 2_200)
    # A deposed leader on B that never saw "b-dep-2" applies it again.
    again = core.decide(before, issued(_deposit("b-dep-2", 5), PEOPLE), 2_300)
    pair.append(list(again.events))
    report = pair.check(loss)
    assert report.verdict == "fail" and report.duplicated == 1
    assert "duplicated" in report.violation_counts


def test_a_read_site_a_served_in_the_rpo_window_is_counted_earlier_ones_judged() -> None:
    pair, loss = _site_a_then_b()
    read = core.GetAccount(request_id="read-lost", account_id="alice")
    shows_lost = copy.deepcopy(pair.state)
    for event in core.decide(shows_lost, issued(_deposit("x", 100), PEOPLE), 1_020).events:
        core.apply(shows_lost, event)
    # Served by A after its last entry B holds (log time 1010): it shows the
    # lost deposit, a balance B's log never had.
    pair.hear(read, core.decide(shows_lost, issued(read, PEOPLE), 1_025), 1_025)
    report = pair.check(loss)
    assert report.verdict == "pass", report.violations
    assert report.rpo_window_reads == 1

    # The same balance read before B's last entry from A was written is stale.
    early = core.GetAccount(request_id="read-early", account_id="alice")
    pair.hear(early, core.decide(shows_lost, issued(early, PEOPLE), 1_005), 1_005)
    report = pair.check(loss)
    assert report.verdict == "fail"
    assert [v.request_ids for v in report.violations if v.kind == "stale_read"] == [["read-early"]]


def test_an_op_acknowledged_before_the_last_entry_b_holds_was_decided_is_lost() -> None:
    # Its entry would come before B's copy ends: B lacking it is a real loss.
    pair, loss = _site_a_then_b()
    pair.lost_with_site_a(_deposit("hole", 3), 1_004)
    report = pair.check(loss)
    assert report.verdict == "fail"
    assert [v.request_ids for v in report.violations if v.kind == "lost"] == [["hole"]]
    assert [r.request_id for r in report.rpo_lost] == ["lost-dep"]


def test_nothing_is_excused_when_b_holds_nothing_of_a() -> None:
    pair, loss = _site_a_then_b()
    report = pair.check(SiteLoss(acks_before_ms=loss.acks_before_ms, kept_seq=0))
    assert report.verdict == "fail" and report.rpo_acked_lost == 0
