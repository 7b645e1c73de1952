"""The checker's projection rule: the gateway's SQLite history projection,
folded by the real projector code, must equal a fold of the log; a changed,
missing or extra row, a wrong balance or a projection behind the log fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_history_checker import Run

from ironbook import core
from ironbook.chaos.projection import ProjectionCheck, read_projection
from ironbook.replication.checker import CheckReport, check_history
from ironbook.replication.interfaces import LogUnavailable
from ironbook.services.gateway.history import HistoryStore


def _race(run: Run) -> None:
    for account in ("alice", "bob"):
        run.submit(core.OpenAccount(request_id=f"open-{account}", account_id=account))
        run.submit(
            core.Deposit(
                request_id=f"dep-{account}",
                account_id=account,
                amount_minor=900,
                reason="test top-up",
            )
        )
    run.submit(
        core.CreateMarket(
            request_id="market",
            market_id="race-1",
            event_id="meeting",
            name="Race 1",
            selections=(
                core.SelectionSpec(selection_id="s0", name="Horse 0", odds=250),
                core.SelectionSpec(selection_id="s1", name="Horse 1", odds=300),
            ),
        )
    )
    for account, selection in (("alice", "s0"), ("bob", "s1")):
        run.submit(
            core.PlaceBet(
                request_id=f"bet-{account}",
                account_id=account,
                stake_minor=200,
                legs=(core.BetLeg("race-1", selection, 250 if selection == "s0" else 300),),
            )
        )
    run.submit(core.Withdraw(request_id="wd-bob", account_id="bob", amount_minor=100))
    run.submit(core.CloseMarket(request_id="close", market_id="race-1"))
    run.submit(
        core.SettleMarket(
            request_id="settle", market_id="race-1", winners=(core.Winner(selection_id="s0"),)
        )
    )


def _project(run: Run, path: Path, upto: int | None = None) -> None:
    store = HistoryStore(path, verifier=None)
    entries = run.entries[:upto]
    for start in range(0, len(entries), 3):  # in chunks, as the projector commits
        store.fold(entries[start : start + 3])
    store.close()


def _check(run: Run, path: Path) -> CheckReport:
    return check_history(
        run.recorder.operations,
        run.entries,
        {"r1": core.state_hash(run.state)},
        expected_replicas=["r1"],
        read_model=ProjectionCheck(read_projection(path)),
    )


def test_the_projectors_fold_agrees_with_the_log(tmp_path: Path) -> None:
    run = Run()
    _race(run)
    _project(run, tmp_path / "p0.sqlite")
    report = _check(run, tmp_path / "p0.sqlite")
    assert report.verdict == "pass", report.violations
    assert report.projection_agrees is True
    projection = read_projection(tmp_path / "p0.sqlite")
    assert projection.applied_seq == len(run.entries)
    assert len(projection.rows) == 6  # 2 deposits, 2 stakes, a withdrawal, a payout


def test_a_fold_refused_midway_changes_nothing_and_the_next_one_carries_on(
    tmp_path: Path,
) -> None:
    """A chunk that does not follow the stored position is refused before any
    write: the position, the rows and the balances the projector remembers
    between folds stay as they were."""
    run = Run()
    _race(run)
    path = tmp_path / "p0.sqlite"
    store = HistoryStore(path, verifier=None)
    store.fold(run.entries[:4])
    before = read_projection(path)
    with pytest.raises(LogUnavailable):
        store.fold(run.entries[4:6] + run.entries[7:9])  # entry 8 is missing
    assert read_projection(path) == before
    for start in range(4, len(run.entries), 2):
        store.fold(run.entries[start : start + 2])
    store.close()
    report = _check(run, path)
    assert report.verdict == "pass", report.violations
    assert report.projection_agrees is True


def test_without_a_projection_the_rule_is_not_applied() -> None:
    run = Run()
    _race(run)
    report = run.check()
    assert report.verdict == "pass" and report.projection_agrees is None


def _tampered(tmp_path: Path, statement: str) -> CheckReport:
    run = Run()
    _race(run)
    path = tmp_path / "p0.sqlite"
    _project(run, path)
    with sqlite3.connect(path) as db:
        db.execute(statement)
    return _check(run, path)


def test_a_changed_row_fails(tmp_path: Path) -> None:
    report = _tampered(
        tmp_path,
        "UPDATE entries SET amount_minor = amount_minor + 1 "
        "WHERE entry_id = (SELECT MAX(entry_id) FROM entries)",
    )
    assert report.verdict == "fail" and report.projection_agrees is False
    mismatch = [v for v in report.violations if v.kind == "projection_mismatch"]
    assert mismatch and mismatch[0].seqs and "the log says" in mismatch[0].detail


def test_a_missing_row_and_a_wrong_balance_fail(tmp_path: Path) -> None:
    report = _tampered(tmp_path, "DELETE FROM entries WHERE kind = 'withdrawal'")
    assert report.projection_agrees is False
    assert any("missing" in v.detail for v in report.violations)
    report = _tampered(
        tmp_path / "b", "UPDATE accounts SET balance_minor = 1 WHERE account_id = 'alice'"
    )
    assert report.projection_agrees is False
    assert any("alice balance: projection 1" in v.detail for v in report.violations)


def test_a_projection_behind_the_log_fails(tmp_path: Path) -> None:
    run = Run()
    _race(run)
    path = tmp_path / "p0.sqlite"
    _project(run, path, upto=len(run.entries) - 2)
    report = _check(run, path)
    assert report.projection_agrees is False
    assert any(
        f"at position {len(run.entries) - 2}, the log at {len(run.entries)}" in v.detail
        for v in report.violations
    )
