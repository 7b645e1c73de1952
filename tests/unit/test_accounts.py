"""Accounts, money movements, deposit limits and self-exclusion."""

from __future__ import annotations

import pytest
from ledger_driver import DAY_MS, HOUR_MS, Ledger

from ironbook.core import (
    CASHIER,
    HOUSE,
    STAKES_HELD,
    SYSTEM_ACCOUNTS,
    AdjustBalance,
    Deposit,
    LedgerConfig,
    OpenAccount,
    Principal,
    SelfExclude,
    SetDepositLimits,
    Withdraw,
    check_invariants,
)
from ironbook.core.events import (
    AccountOpened,
    BalanceAdjusted,
    CommandRejected,
    Deposited,
    DepositLimitsSet,
    Withdrawn,
)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def deposit(ledger: Ledger, account_id: str, amount_minor: int) -> Deposit:
    return Deposit(
        request_id=ledger.request_id(),
        account_id=account_id,
        amount_minor=amount_minor,
        reason="test top-up",
    )


def withdraw(ledger: Ledger, account_id: str, amount_minor: int) -> Withdraw:
    return Withdraw(
        request_id=ledger.request_id(), account_id=account_id, amount_minor=amount_minor
    )


def limits(
    ledger: Ledger,
    account_id: str,
    day: int | None = None,
    week: int | None = None,
    month: int | None = None,
) -> SetDepositLimits:
    return SetDepositLimits(
        request_id=ledger.request_id(),
        account_id=account_id,
        day_minor=day,
        week_minor=week,
        month_minor=month,
    )


def self_exclude(ledger: Ledger, account_id: str, days: int) -> SelfExclude:
    return SelfExclude(request_id=ledger.request_id(), account_id=account_id, days=days)


# Opening accounts.


def test_new_ledger_has_only_the_system_accounts_at_zero(ledger: Ledger) -> None:
    assert set(ledger.state.accounts) == set(SYSTEM_ACCOUNTS) == {HOUSE, STAKES_HELD, CASHIER}
    assert all(account.kind == "system" for account in ledger.state.accounts.values())
    assert all(account.balance_minor == 0 for account in ledger.state.accounts.values())


def test_open_account(ledger: Ledger) -> None:
    ledger.advance(1_234)
    reply = ledger.ok(OpenAccount(request_id="r1", account_id="alice"))
    assert reply.account_id == "alice"
    assert reply.balance_minor == 0
    account = ledger.state.accounts["alice"]
    assert account.kind == "player"
    assert account.balance_minor == 0
    assert account.opened_ms == 1_234
    [event] = ledger.log
    assert isinstance(event, AccountOpened)
    assert event.postings == ()


@pytest.mark.parametrize(
    "account_id",
    ["", "has space", "tab\there", "new\nline", "x" * 65, "sys:house", "sys:mine", "bell\x07"],
)
def test_invalid_account_ids_are_refused(ledger: Ledger, account_id: str) -> None:
    code = ledger.refused(OpenAccount(request_id=ledger.request_id(), account_id=account_id))
    assert code == "invalid_account_id"
    assert set(ledger.state.accounts) == set(SYSTEM_ACCOUNTS)
    assert all(account.kind == "system" for account in ledger.state.accounts.values())


def test_longest_account_id_is_accepted(ledger: Ledger) -> None:
    ledger.ok(OpenAccount(request_id="r1", account_id="x" * 64))


def test_duplicate_account_is_refused(ledger: Ledger) -> None:
    ledger.open_account("alice", 500)
    code = ledger.refused(OpenAccount(request_id=ledger.request_id(), account_id="alice"))
    assert code == "account_exists"
    assert ledger.balance("alice") == 500


@pytest.mark.parametrize("account_id", [HOUSE, STAKES_HELD, CASHIER])
def test_system_accounts_are_not_players(ledger: Ledger, account_id: str) -> None:
    assert ledger.refused(deposit(ledger, account_id, 100)) == "unknown_account"
    assert ledger.refused(withdraw(ledger, account_id, 100)) == "unknown_account"
    assert ledger.refused(self_exclude(ledger, account_id, 1)) == "unknown_account"
    assert ledger.refused(limits(ledger, account_id, day=5)) == "unknown_account"
    assert ledger.balance(account_id) == 0


def test_unknown_account(ledger: Ledger) -> None:
    assert ledger.refused(deposit(ledger, "nobody", 100)) == "unknown_account"
    assert ledger.refused(withdraw(ledger, "nobody", 100)) == "unknown_account"
    adjust = AdjustBalance(
        request_id=ledger.request_id(), account_id="nobody", amount_minor=5, actor="a", reason="r"
    )
    assert ledger.refused(adjust) == "unknown_account"
    assert "nobody" not in ledger.state.accounts


# Deposits and withdrawals.


def test_deposit_credits_the_player_from_the_cashier(ledger: Ledger) -> None:
    ledger.open_account("alice")
    reply = ledger.ok(deposit(ledger, "alice", 2_500))
    assert reply.balance_minor == 2_500
    assert reply.transaction_id
    event = ledger.log[-1]
    assert isinstance(event, Deposited)
    assert sorted(event.postings) == sorted([("alice", 2_500), (CASHIER, -2_500)])
    assert ledger.balance("alice") == 2_500
    assert ledger.balance(CASHIER) == -2_500
    assert check_invariants(ledger.state) == []


def test_transaction_ids_are_unique(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ids = {ledger.ok(deposit(ledger, "alice", 100)).transaction_id for _ in range(5)}
    ids.add(ledger.ok(withdraw(ledger, "alice", 100)).transaction_id)
    assert len(ids) == 6


@pytest.mark.parametrize("amount", [0, -1, -500, 10**12 + 1])
def test_deposit_amount_out_of_range(ledger: Ledger, amount: int) -> None:
    ledger.open_account("alice")
    assert ledger.refused(deposit(ledger, "alice", amount)) == "invalid_amount"
    assert ledger.balance("alice") == 0


def test_largest_deposit_is_accepted(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(deposit(ledger, "alice", 10**12))
    assert ledger.balance("alice") == 10**12


def test_withdrawal_debits_the_player(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    reply = ledger.ok(withdraw(ledger, "alice", 400))
    assert reply.balance_minor == 600
    event = ledger.log[-1]
    assert isinstance(event, Withdrawn)
    assert sorted(event.postings) == sorted([("alice", -400), (CASHIER, 400)])
    assert ledger.balance("alice") == 600
    assert ledger.balance(CASHIER) == -600


def test_withdrawal_of_the_whole_balance(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    ledger.ok(withdraw(ledger, "alice", 1_000))
    assert ledger.balance("alice") == 0


def test_withdrawal_never_goes_below_zero(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    assert ledger.refused(withdraw(ledger, "alice", 1_001)) == "insufficient_funds"
    assert ledger.balance("alice") == 1_000
    assert isinstance(ledger.log[-1], CommandRejected)
    assert ledger.log[-1].postings == ()


@pytest.mark.parametrize("amount", [0, -100])
def test_withdrawal_amount_out_of_range(ledger: Ledger, amount: int) -> None:
    ledger.open_account("alice", 1_000)
    assert ledger.refused(withdraw(ledger, "alice", amount)) == "invalid_amount"
    assert ledger.balance("alice") == 1_000


# Adjustments.


def adjust(ledger: Ledger, amount: int, actor: str = "ops", reason: str = "goodwill"):
    """An adjustment by the admin `actor`: the principal is what the log records."""
    return AdjustBalance(
        request_id=ledger.request_id(),
        account_id="alice",
        amount_minor=amount,
        actor=actor,
        reason=reason,
        principal=Principal(subject=actor, role="admin"),
    )


def test_adjustment_moves_money_between_player_and_house(ledger: Ledger) -> None:
    ledger.open_account("alice", 100)
    ledger.ok(adjust(ledger, 250, actor="ops:jo", reason="late settlement"))
    event = ledger.log[-1]
    assert isinstance(event, BalanceAdjusted)
    assert event.actor == "ops:jo"
    assert event.reason == "late settlement"
    assert sorted(event.postings) == sorted([("alice", 250), (HOUSE, -250)])
    assert ledger.balance("alice") == 350
    ledger.ok(adjust(ledger, -300))
    assert ledger.balance("alice") == 50
    assert ledger.house() == 50
    assert check_invariants(ledger.state) == []


@pytest.mark.parametrize("reason", ["", " "])
def test_adjustment_needs_a_reason(ledger: Ledger, reason: str) -> None:
    ledger.open_account("alice", 100)
    assert ledger.refused(adjust(ledger, 50, reason=reason)) == "missing_reason"
    assert ledger.balance("alice") == 100


@pytest.mark.parametrize("amount", [0, 10**12 + 1, -(10**12) - 1])
def test_adjustment_amount_out_of_range(ledger: Ledger, amount: int) -> None:
    ledger.open_account("alice", 100)
    assert ledger.refused(adjust(ledger, amount)) == "invalid_amount"


def test_adjustment_cannot_take_a_player_below_zero(ledger: Ledger) -> None:
    ledger.open_account("alice", 100)
    assert ledger.refused(adjust(ledger, -101)) == "insufficient_funds"
    assert ledger.balance("alice") == 100
    ledger.ok(adjust(ledger, -100))
    assert ledger.balance("alice") == 0


# Deposit limits.


def test_limit_refuses_a_deposit_over_the_day(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=1_000))
    ledger.ok(deposit(ledger, "alice", 600))
    ledger.ok(deposit(ledger, "alice", 400))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"
    assert ledger.balance("alice") == 1_000


def test_day_window_slides(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=1_000))
    ledger.ok(deposit(ledger, "alice", 600))
    ledger.advance(12 * HOUR_MS)
    ledger.ok(deposit(ledger, "alice", 400))
    ledger.advance(12 * HOUR_MS - 1)
    assert ledger.refused(deposit(ledger, "alice", 600)) == "deposit_limit_exceeded"
    ledger.advance(1)  # the first deposit is now exactly 24 h old: out of the window
    ledger.ok(deposit(ledger, "alice", 600))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"


@pytest.mark.parametrize(("period", "window_ms"), [("week", 7 * DAY_MS), ("month", 30 * DAY_MS)])
def test_week_and_month_windows(ledger: Ledger, period: str, window_ms: int) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", **{period: 1_000}))
    ledger.ok(deposit(ledger, "alice", 700))
    ledger.advance(window_ms // 2)
    assert ledger.refused(deposit(ledger, "alice", 301)) == "deposit_limit_exceeded"
    ledger.ok(deposit(ledger, "alice", 300))
    ledger.advance(window_ms - window_ms // 2 - 1)
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"
    ledger.advance(1)
    ledger.ok(deposit(ledger, "alice", 700))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"


def test_every_period_is_enforced(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=500, week=800, month=1_000))
    ledger.ok(deposit(ledger, "alice", 500))
    ledger.advance(DAY_MS)
    assert ledger.refused(deposit(ledger, "alice", 301)) == "deposit_limit_exceeded"  # week
    ledger.ok(deposit(ledger, "alice", 300))
    ledger.advance(7 * DAY_MS)
    assert ledger.refused(deposit(ledger, "alice", 201)) == "deposit_limit_exceeded"  # month
    ledger.ok(deposit(ledger, "alice", 200))


def test_decrease_takes_effect_at_once(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=1_000))
    ledger.ok(deposit(ledger, "alice", 300))
    reply = ledger.ok(limits(ledger, "alice", day=400))
    [day] = [change for change in reply.changes if change.period == "day"]
    assert day.limit_minor == 400
    assert day.effective_ms == ledger.now_ms
    assert ledger.refused(deposit(ledger, "alice", 101)) == "deposit_limit_exceeded"
    ledger.ok(deposit(ledger, "alice", 100))


def test_first_limit_takes_effect_at_once(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", week=100))
    assert ledger.refused(deposit(ledger, "alice", 101)) == "deposit_limit_exceeded"


def test_increase_waits_24_hours_of_log_time(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=100))
    ledger.advance(5_000)
    reply = ledger.ok(limits(ledger, "alice", day=10_000))
    [day] = [change for change in reply.changes if change.period == "day"]
    assert day.effective_ms == 5_000 + DAY_MS
    assert ledger.refused(deposit(ledger, "alice", 101)) == "deposit_limit_exceeded"
    ledger.advance(DAY_MS - 1)
    assert ledger.refused(deposit(ledger, "alice", 101)) == "deposit_limit_exceeded"
    ledger.advance(1)
    ledger.ok(deposit(ledger, "alice", 5_000))
    assert ledger.refused(deposit(ledger, "alice", 5_001)) == "deposit_limit_exceeded"


def test_removal_waits_24_hours(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=100))
    ledger.ok(limits(ledger, "alice"))
    ledger.advance(DAY_MS - 1)
    assert ledger.refused(deposit(ledger, "alice", 101)) == "deposit_limit_exceeded"
    ledger.advance(1)
    ledger.ok(deposit(ledger, "alice", 10**9))


def test_decrease_cancels_a_pending_increase(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=1_000))
    ledger.ok(limits(ledger, "alice", day=5_000))
    ledger.advance(HOUR_MS)
    ledger.ok(limits(ledger, "alice", day=500))
    ledger.advance(2 * DAY_MS)
    ledger.ok(deposit(ledger, "alice", 500))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"


def test_pending_increase_survives_an_unrelated_limit_change(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", day=100))
    ledger.ok(limits(ledger, "alice", day=1_000))
    ledger.advance(2 * DAY_MS)
    ledger.ok(limits(ledger, "alice", day=1_000, week=5_000))
    ledger.ok(deposit(ledger, "alice", 1_000))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"


def test_zero_limit_blocks_deposits(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(limits(ledger, "alice", month=0))
    assert ledger.refused(deposit(ledger, "alice", 1)) == "deposit_limit_exceeded"


@pytest.mark.parametrize("value", [-1, 10**12 + 1])
def test_invalid_limit(ledger: Ledger, value: int) -> None:
    ledger.open_account("alice")
    assert ledger.refused(limits(ledger, "alice", week=value)) == "invalid_limit"
    assert not isinstance(ledger.log[-1], DepositLimitsSet)
    ledger.ok(deposit(ledger, "alice", 10**9))


def test_limits_do_not_restrict_withdrawals(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    ledger.ok(limits(ledger, "alice", day=0))
    ledger.ok(withdraw(ledger, "alice", 1_000))


# Self-exclusion.


def test_self_exclusion_refuses_bets_and_deposits_but_allows_withdrawals(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200, "b": 200})
    reply = ledger.ok(self_exclude(ledger, "alice", 7))
    assert reply.excluded_until_ms == 7 * DAY_MS
    assert ledger.refused(deposit(ledger, "alice", 100)) == "self_excluded"
    assert ledger.refused(ledger.bet_command("alice", 100, ("m1", "a", 200))) == "self_excluded"
    ledger.ok(withdraw(ledger, "alice", 400))
    assert ledger.balance("alice") == 600


def test_self_exclusion_ends_after_its_days(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200, "b": 200})
    ledger.advance(1_000)
    ledger.ok(self_exclude(ledger, "alice", 2))
    ledger.advance(2 * DAY_MS - 1)
    assert ledger.refused(deposit(ledger, "alice", 100)) == "self_excluded"
    ledger.advance(1)
    ledger.ok(deposit(ledger, "alice", 100))
    ledger.bet("alice", 100, ("m1", "a", 200))


def test_self_exclusion_cannot_be_shortened(ledger: Ledger) -> None:
    ledger.open_account("alice", 1_000)
    ledger.ok(self_exclude(ledger, "alice", 30))
    ledger.advance(DAY_MS)
    reply = ledger.ok(self_exclude(ledger, "alice", 1))
    assert reply.excluded_until_ms == 30 * DAY_MS
    ledger.advance(2 * DAY_MS)
    assert ledger.refused(deposit(ledger, "alice", 100)) == "self_excluded"


def test_self_exclusion_can_be_lengthened(ledger: Ledger) -> None:
    ledger.open_account("alice")
    ledger.ok(self_exclude(ledger, "alice", 1))
    ledger.advance(HOUR_MS)
    reply = ledger.ok(self_exclude(ledger, "alice", 10))
    assert reply.excluded_until_ms == HOUR_MS + 10 * DAY_MS
    ledger.advance(5 * DAY_MS)
    assert ledger.refused(deposit(ledger, "alice", 100)) == "self_excluded"


@pytest.mark.parametrize("days", [0, -1, 36_501])
def test_self_exclusion_days_out_of_range(ledger: Ledger, days: int) -> None:
    ledger.open_account("alice")
    assert ledger.refused(self_exclude(ledger, "alice", days)) == "invalid_days"
    ledger.ok(deposit(ledger, "alice", 100))


def test_max_self_exclusion_is_configurable() -> None:
    ledger = Ledger(LedgerConfig(max_self_exclusion_days=10))
    ledger.open_account("alice")
    assert ledger.refused(self_exclude(ledger, "alice", 11)) == "invalid_days"
    ledger.ok(self_exclude(ledger, "alice", 10))
