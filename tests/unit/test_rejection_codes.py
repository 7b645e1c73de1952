"""Every rejection code is part of the public API: each one is reachable, and
a refusal changes nothing but the remembered answer (a refusal of the
principal changes nothing at all: `test_permissions.py`)."""

from __future__ import annotations

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    AdjustBalance,
    AnyCommand,
    BetLeg,
    CashOut,
    CloseMarket,
    CreateMarket,
    Deposit,
    FeedBatch,
    LedgerConfig,
    OpenAccount,
    PlaceBet,
    Principal,
    RejectionCode,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SelfExclude,
    SetDepositLimits,
    SetProducerStatus,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    Withdraw,
    check_invariants,
    decide,
)
from ironbook.core.events import CommandRejected

ALL_CODES = sorted(
    value
    for name, value in vars(RejectionCode).items()
    if name.isupper() and isinstance(value, str)
)


def book() -> Ledger:
    ledger = Ledger(
        LedgerConfig(
            max_liability_minor=5_000, max_legs=2, resettle_window_ms=1, bet_retention_ms=2
        )
    )
    ledger.create_market("old", {"o": 200})  # resulted before the resettlement window
    ledger.close("old")
    ledger.ok(SettleMarket(request_id="old", market_id="old", winners=(Winner("o"),)))
    ledger.advance(2)
    ledger.open_account("alice", 1_000)
    ledger.open_account("sam", 1_000)
    ledger.ok(SelfExclude(request_id="x", account_id="sam", days=1))
    ledger.ok(SetDepositLimits(request_id="l", account_id="alice", day_minor=2_000))
    ledger.create_market("m1", {"a": 250, "b": 300})
    ledger.create_market("m2", {"x": 200})
    ledger.create_market("m3", {"y": 200})
    ledger.create_market("big", {"z": 1_000})
    ledger.bet("alice", 100, ("m1", "a", 250))  # B0-1, open: cash-outs
    ledger.bet("alice", 100, ("m2", "x", 200))  # B0-2, on a market about to be suspended
    ledger.ok(SuspendMarket(request_id="s", market_id="m2"))
    ledger.close("m3")
    ledger.advance(20_000)
    return ledger


def cash_out(bet_id: str, quote_id: str, amount_minor: int) -> CashOut:
    return CashOut(
        request_id="cmd",
        account_id="alice",
        bet_id=bet_id,
        quote_id=quote_id,
        amount_minor=amount_minor,
    )


def bet(*legs: tuple[str, str, int], stake: int = 100, account: str = "alice") -> PlaceBet:
    return PlaceBet(
        request_id="cmd",
        account_id=account,
        stake_minor=stake,
        legs=tuple(BetLeg(market_id=m, selection_id=s, odds=o) for m, s, o in legs),
    )


def market(market_id: str = "m1", odds: int = 200) -> CreateMarket:
    return CreateMarket(
        request_id="cmd",
        market_id=market_id,
        event_id="e",
        name="n",
        selections=(SelectionSpec(selection_id="s", name="S", odds=odds),),
    )


EXAMPLES: dict[str, AnyCommand] = {
    "invalid_account_id": OpenAccount(request_id="cmd", account_id="sys:me"),
    "account_exists": OpenAccount(request_id="cmd", account_id="alice"),
    "unknown_account": Deposit(
        request_id="cmd", account_id="zed", amount_minor=5, reason="test top-up"
    ),
    "invalid_amount": Deposit(
        request_id="cmd", account_id="alice", amount_minor=0, reason="test top-up"
    ),
    "insufficient_funds": Withdraw(request_id="cmd", account_id="alice", amount_minor=1_001),
    "self_excluded": Deposit(
        request_id="cmd", account_id="sam", amount_minor=5, reason="test top-up"
    ),
    "deposit_limit_exceeded": Deposit(
        request_id="cmd", account_id="alice", amount_minor=1_001, reason="test top-up"
    ),
    "invalid_limit": SetDepositLimits(request_id="cmd", account_id="alice", day_minor=-1),
    "invalid_days": SelfExclude(request_id="cmd", account_id="alice", days=0),
    "missing_reason": AdjustBalance(
        request_id="cmd", account_id="alice", amount_minor=5, actor="ops", reason=""
    ),
    "invalid_market": market("bad id"),
    "market_exists": market("m1"),
    "unknown_market": CloseMarket(request_id="cmd", market_id="zed"),
    "unknown_selection": bet(("m1", "zed", 250)),
    "invalid_odds": UpdatePrices(
        request_id="cmd", market_id="m1", prices=(SelectionPrice(selection_id="a", odds=100),)
    ),
    "off_ladder": UpdatePrices(
        request_id="cmd", market_id="m1", prices=(SelectionPrice(selection_id="a", odds=251),)
    ),
    "invalid_status_change": SettleMarket(request_id="cmd", market_id="m1", winners=()),
    "market_suspended": bet(("m2", "x", 200)),
    "market_closed": bet(("m3", "y", 200)),
    "invalid_result": SettleMarket(
        request_id="cmd", market_id="m3", winners=(Winner(selection_id="zed"),)
    ),
    "no_legs": bet(),
    "too_many_legs": bet(("m1", "a", 250), ("big", "z", 1_000), ("m3", "y", 200)),
    "duplicate_selection": bet(("m1", "a", 250), ("m1", "a", 250)),
    "related_legs": bet(("m1", "a", 250), ("m1", "b", 300)),
    "stake_too_low": bet(("m1", "a", 250), stake=9),
    "stake_too_high": bet(("m1", "a", 250), stake=10_000_001),
    "price_changed": bet(("m1", "a", 260)),
    "unknown_bet": cash_out("B0-99", "B0-99:100:100:95:25000", 95),
    "cash_out_unavailable": cash_out("B0-2", "B0-2:100:100:95:25000", 95),
    "invalid_quote": cash_out("B0-1", "B0-1:100:100:95:999999999", 95),
    "quote_expired": cash_out("B0-1", "B0-1:100:100:95:5000", 95),
    "quote_changed": cash_out("B0-1", "B0-1:100:100:96:25000", 96),
    "no_each_way": PlaceBet(
        request_id="cmd",
        account_id="alice",
        stake_minor=100,
        legs=(BetLeg(market_id="m1", selection_id="a", odds=250),),
        each_way=True,
    ),
    "liability_exceeded": bet(("big", "z", 1_000), stake=1_000),
    "invalid_producer": SetProducerStatus(request_id="cmd", producer="bad id", down=True),
    "invalid_feed": FeedBatch(request_id="cmd", producer="lsports", to_cursor=-1, markets=()),
    "resettle_window_closed": RollbackSettlement(
        request_id="cmd", market_id="old", actor="ops", reason="r"
    ),
    "invalid_window": VoidMarket(
        request_id="cmd", market_id="m1", actor="ops", reason="r", placed_from_ms=5, placed_to_ms=5
    ),
}


PERMISSION_EXAMPLES: dict[str, AnyCommand] = {
    "unauthenticated": Deposit(request_id="cmd", account_id="alice", amount_minor=5, reason="r"),
    "forbidden": Deposit(
        request_id="cmd",
        account_id="alice",
        amount_minor=5,
        reason="r",
        principal=Principal(subject="bettor:alice", role="bettor", account_id="alice"),
    ),
}
"""Refused before anything else, and never logged or remembered."""


def test_every_code_has_an_example() -> None:
    assert sorted({**EXAMPLES, **PERMISSION_EXAMPLES}) == ALL_CODES


@pytest.mark.parametrize("code", sorted(PERMISSION_EXAMPLES))
def test_permission_code(code: str) -> None:
    ledger = book()
    outcome = decide(ledger.state, PERMISSION_EXAMPLES[code], ledger.now_ms)
    assert outcome.code == code and outcome.message  # type: ignore[union-attr]
    assert outcome.events == ()
    assert "cmd" not in ledger.state.replies


@pytest.mark.parametrize("code", sorted(EXAMPLES))
def test_rejection_code(code: str) -> None:
    ledger = book()
    accounts_before = {k: v.balance_minor for k, v in ledger.state.accounts.items()}
    markets_before = {k: v.status for k, v in ledger.state.markets.items()}
    bets_before = len(ledger.state.bets)
    assert ledger.refused(EXAMPLES[code]) == code
    [event] = ledger.log[-1:]
    assert isinstance(event, CommandRejected)
    assert event.reply.code == code
    assert event.reply.message
    assert {k: v.balance_minor for k, v in ledger.state.accounts.items()} == accounts_before
    assert {k: v.status for k, v in ledger.state.markets.items()} == markets_before
    assert len(ledger.state.bets) == bets_before
    assert ledger.state.replies["cmd"] == event.reply
    assert check_invariants(ledger.state) == []
