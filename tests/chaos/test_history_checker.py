"""The chaos checker on hand-made histories: a correct run passes, and each
rule, broken, fails the verdict and names the operations and log positions."""

from __future__ import annotations

from pathlib import Path

from ironbook import core
from ironbook.chaos.history import HistoryRecorder, read_history
from ironbook.core import acting, issued
from ironbook.core.events import TransactionReply
from ironbook.replication.batch import decode_batch, encode_batch
from ironbook.replication.checker import CheckReport, check_history
from ironbook.replication.interfaces import LogEntry

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


class Run:
    """One correct sequencer writing one command per log entry, and the
    history its clients recorded."""

    def __init__(self, path: Path | None = None) -> None:
        self.state = core.new_state()
        self.entries: list[LogEntry] = []
        self.recorder = HistoryRecorder(path)
        self._prev = ""

    def submit(
        self, command: core.AnyCommand | core.AnyQuery, *, client: str = "c0", log: bool = True
    ) -> core.Outcome:
        invocation = self.recorder.invoke(client, command)
        outcome = core.decide(self.state, issued(command, PEOPLE), 1_000 + len(self.entries))
        for event in outcome.events:
            core.apply(self.state, event)
        if outcome.events and log:
            self.append(list(outcome.events))
        invocation.complete(outcome)
        return outcome

    def give_up(self, command: core.AnyCommand, *, applied: bool) -> None:
        invocation = self.recorder.invoke("c1", command)
        if applied:
            outcome = core.decide(self.state, issued(command, PEOPLE), 1_000 + len(self.entries))
            for event in outcome.events:
                core.apply(self.state, event)
            self.append(list(outcome.events))
        invocation.give_up("GaveUp: no outcome")

    def append(self, events: list[core.AnyEvent]) -> None:
        seq = len(self.entries) + 1
        batch_id = f"1:{seq}"
        self.entries.append(LogEntry(seq, batch_id, encode_batch(self._prev, events)))
        self._prev = batch_id

    def check(self, hashes: dict[str, str] | None = None) -> CheckReport:
        replicas = hashes if hashes is not None else {"r1": core.state_hash(self.state)}
        return check_history(
            self.recorder.operations, self.entries, replicas, expected_replicas=list(replicas)
        )


def _funded(path: Path | None = None) -> Run:
    run = Run(path)
    run.submit(core.OpenAccount(request_id="open", account_id="alice"))
    run.submit(
        core.Deposit(request_id="dep", account_id="alice", amount_minor=1_000, reason="test top-up")
    )
    return run


def test_a_correct_run_passes_and_counts_everything(tmp_path: Path) -> None:
    run = _funded(tmp_path / "history.jsonl")
    run.submit(core.Withdraw(request_id="too-much", account_id="alice", amount_minor=5_000))
    run.submit(core.GetAccount(request_id="read", account_id="alice"))
    run.give_up(
        core.Deposit(
            request_id="maybe-1", account_id="alice", amount_minor=5, reason="test top-up"
        ),
        applied=True,
    )
    run.give_up(
        core.Deposit(
            request_id="maybe-2", account_id="alice", amount_minor=5, reason="test top-up"
        ),
        applied=False,
    )
    report = run.check()
    assert report.verdict == "pass", report.violations
    assert (report.ok, report.fail, report.info, report.reads) == (2, 1, 2, 1)
    assert (report.info_applied, report.info_absent) == (1, 1)
    assert report.conserved and report.replicas_agree and report.reads_consistent
    run.recorder.close()
    assert read_history(tmp_path / "history.jsonl") == run.recorder.operations


def test_an_acknowledged_command_missing_from_the_log_is_lost() -> None:
    run = _funded()
    run.submit(
        core.Deposit(request_id="gone", account_id="alice", amount_minor=50, reason="test top-up"),
        log=False,
    )
    report = run.check(hashes={})
    assert report.verdict == "fail"
    assert report.lost == 1
    lost = [v for v in report.violations if v.kind == "lost"]
    assert lost[0].request_ids == ["gone"]


def test_a_command_in_two_entries_is_duplicated() -> None:
    run = _funded()
    run.submit(
        core.Deposit(request_id="twice", account_id="alice", amount_minor=50, reason="test top-up")
    )
    # The same event appended once more, as a leader that lost track would.
    events = core.decode_events(decode_batch(run.entries[-1].payload).events)
    for event in events:
        core.apply(run.state, event)
    run.append(events)
    report = run.check()
    assert report.verdict == "fail"
    assert report.duplicated == 1
    duplicated = [v for v in report.violations if v.kind == "duplicated"]
    assert duplicated[0].seqs == [3, 4]


def test_a_refused_command_that_changed_the_log_fails() -> None:
    run = _funded()
    refused = core.Withdraw(request_id="no", account_id="alice", amount_minor=300)
    invocation = run.recorder.invoke("c0", refused)
    outcome = core.decide(run.state, issued(refused, PEOPLE), 5_000)
    for event in outcome.events:
        core.apply(run.state, event)
    run.append(list(outcome.events))
    invocation.complete(core.Rejected(code="insufficient_funds", message="made up"))
    report = run.check()
    assert report.verdict == "fail"
    assert "rejection_applied" in report.violation_counts


def test_a_read_older_than_the_clients_own_write_is_stale() -> None:
    run = _funded()
    read = core.GetAccount(request_id="read", account_id="alice")
    invocation = run.recorder.invoke("c0", read)
    stale = core.decide(run.state, issued(read, PEOPLE), 5_000)  # balance 1000
    run.submit(
        core.Deposit(request_id="more", account_id="alice", amount_minor=1, reason="test top-up")
    )
    # A read issued after "more" was acknowledged, answered with the old balance.
    later = run.recorder.invoke("c0", core.GetAccount(request_id="read-2", account_id="alice"))
    later.complete(stale)
    invocation.complete(stale)
    report = run.check()
    assert report.verdict == "fail"
    stale_reads = [v for v in report.violations if v.kind == "stale_read"]
    assert [v.request_ids for v in stale_reads] == [["read-2"]]
    assert not report.reads_consistent


def test_replicas_that_disagree_or_never_converge_fail() -> None:
    run = _funded()
    good = core.state_hash(run.state)
    assert run.check({"r1": good, "r2": "0" * 64}).replicas_agree is False
    report = check_history(
        run.recorder.operations, run.entries, {"r1": good}, expected_replicas=["r1", "r2"]
    )
    assert report.verdict == "fail"
    assert not report.replicas_agree


def test_a_reply_that_differs_from_the_logged_one_fails() -> None:
    run = _funded()
    command = core.Deposit(
        request_id="dep-2", account_id="alice", amount_minor=10, reason="test top-up"
    )
    invocation = run.recorder.invoke("c0", command)
    outcome = core.decide(run.state, issued(command, PEOPLE), 5_000)
    for event in outcome.events:
        core.apply(run.state, event)
    run.append(list(outcome.events))
    heard = TransactionReply(account_id="alice", balance_minor=999_999, transaction_id="T-x")
    invocation.complete(core.Accepted(events=(), result=heard))
    report = run.check()
    assert report.verdict == "fail"
    assert report.violation_counts == {"outcome_mismatch": 1}


def test_two_clients_told_different_things_about_one_request_fails() -> None:
    run = _funded()
    again = run.recorder.invoke(
        "c9",
        core.Deposit(request_id="dep", account_id="alice", amount_minor=1, reason="test top-up"),
    )
    again.complete(core.Rejected(code="insufficient_funds", message="made up"))
    report = run.check()
    assert report.verdict == "fail"
    assert "inconsistent_replies" in report.violation_counts


def _sliced_settlement() -> tuple[Run, core.LedgerConfig]:
    """A settlement of 5 bets in slices of 2: three log entries, one request."""
    config = core.LedgerConfig(result_slice_bets=2)
    run = Run()
    run.state = core.new_state(config)
    run.submit(core.OpenAccount(request_id="open", account_id="alice"))
    run.submit(
        core.Deposit(request_id="dep", account_id="alice", amount_minor=1_000, reason="test top-up")
    )
    selections = (core.SelectionSpec(selection_id="a", name="A", odds=200),)
    run.submit(
        core.CreateMarket(
            request_id="create", market_id="m", event_id="e", name="M", selections=selections
        )
    )
    for number in range(5):
        leg = core.BetLeg(market_id="m", selection_id="a", odds=200)
        run.submit(
            core.PlaceBet(
                request_id=f"bet-{number}", account_id="alice", stake_minor=10, legs=(leg,)
            )
        )
    run.submit(core.CloseMarket(request_id="close", market_id="m"))
    run.submit(core.SettleMarket(request_id="settle", market_id="m", winners=(core.Winner("a"),)))
    while run.state.settlements:  # the leader's continuations, one entry each
        [continuation] = core.continuations(run.state)
        outcome = core.decide(run.state, issued(continuation, PEOPLE), 2_000)
        for event in outcome.events:
            core.apply(run.state, event)
        run.append(list(outcome.events))
    return run, config


def test_a_settlement_in_slices_is_applied_once_and_a_repeated_slice_is_duplicated() -> None:
    run, config = _sliced_settlement()
    replicas = {"r1": core.state_hash(run.state)}
    report = check_history(run.recorder.operations, run.entries, replicas, ledger_config=config)
    assert report.verdict == "pass", report.violations
    # The last slice appended once more, as a leader that lost track would.
    events = core.decode_events(decode_batch(run.entries[-1].payload).events)
    for event in events:
        core.apply(run.state, event)
    run.append(events)
    replicas = {"r1": core.state_hash(run.state)}
    report = check_history(run.recorder.operations, run.entries, replicas, ledger_config=config)
    assert report.duplicated == 1
