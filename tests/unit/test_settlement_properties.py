"""Properties of market results: the slice size of a big result is a logging
detail and must never change who gets paid what."""

from __future__ import annotations

from fractions import Fraction
from math import floor

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ledger_driver import Ledger

from ironbook.core import (
    HOUSE,
    LedgerConfig,
    ResettleMarket,
    SettleMarket,
    VoidMarket,
    Winner,
    Withdraw,
    check_invariants,
)
from ironbook.core.events import MarketResulted

PLAYERS = ("ann", "ben", "cat")
ODDS = {"a": 250, "b": 300, "c": 1_000, "d": 101}
SLICE_SIZES = (1, 2, 3, 1_000)

bets_strategy = st.lists(
    st.tuples(st.sampled_from(PLAYERS), st.sampled_from(sorted(ODDS)), st.integers(10, 2_000)),
    min_size=1,
    max_size=12,
)
result_strategy = st.none() | st.dictionaries(
    st.sampled_from(sorted(ODDS)), st.sampled_from((1, 1, 2, 3)), max_size=2
)


def submit_result(ledger: Ledger, result: dict[str, int] | None, correction: bool) -> None:
    request_id = ledger.request_id()
    winners = tuple(Winner(selection_id=s, dead_heat=d) for s, d in sorted((result or {}).items()))
    if result is None:
        command = VoidMarket(request_id=request_id, market_id="m", actor="ops", reason="void")
    elif correction:
        command = ResettleMarket(
            request_id=request_id, market_id="m", winners=winners, actor="ops", reason="fix"
        )
    else:
        command = SettleMarket(request_id=request_id, market_id="m", winners=winners)
    ledger.ok(command)


def run(
    slice_bets: int,
    bets: list[tuple[str, str, int]],
    first: dict[str, int] | None,
    second: dict[str, int] | None,
    cash_out: set[str],
) -> tuple[dict[str, int], dict[str, int], list[tuple[str, int]]]:
    ledger = Ledger(LedgerConfig(result_slice_bets=slice_bets))
    for player in PLAYERS:
        ledger.open_account(player, 20_000)
    ledger.create_market("m", ODDS)
    bet_ids = [ledger.bet(player, stake, ("m", sel, ODDS[sel])) for player, sel, stake in bets]
    ledger.close("m")
    submit_result(ledger, first, correction=False)
    for player in sorted(cash_out):
        if ledger.balance(player):
            ledger.ok(
                Withdraw(
                    request_id=ledger.request_id(),
                    account_id=player,
                    amount_minor=ledger.balance(player),
                )
            )
    log_before = len(ledger.log)
    submit_result(ledger, second, correction=True)
    assert check_invariants(ledger.state) == []
    for event in ledger.log:
        assert sum(amount for _, amount in event.postings) == 0
    written_off: dict[str, int] = {}
    for event in ledger.log[log_before:]:
        assert isinstance(event, MarketResulted)
        for player, amount in event.written_off:
            written_off[player] = written_off.get(player, 0) + amount
    balances = {account: ledger.balance(account) for account in (*PLAYERS, HOUSE)}
    payouts = [(ledger.state.bets[b].status, ledger.state.bets[b].payout_minor) for b in bet_ids]
    return balances, written_off, payouts


def payout(stake: int, selection: str, result: dict[str, int] | None) -> int:
    if result is None:
        return stake
    if selection not in result:
        return 0
    return floor(Fraction(stake * ODDS[selection], 100) / result[selection])


@settings(max_examples=150)
@given(
    bets=bets_strategy,
    first=result_strategy,
    second=result_strategy,
    cash_out=st.sets(st.sampled_from(PLAYERS)),
)
def test_a_corrected_result_does_not_depend_on_the_slice_size(
    bets: list[tuple[str, str, int]],
    first: dict[str, int] | None,
    second: dict[str, int] | None,
    cash_out: set[str],
) -> None:
    assume(first is not None or second is not None)  # a void market cannot be voided again
    runs = [run(slice_bets, bets, first, second, cash_out) for slice_bets in SLICE_SIZES]
    for slice_bets, other in zip(SLICE_SIZES[1:], runs[1:], strict=True):
        assert other == runs[0], f"slices of {slice_bets} bets: {other} != {runs[0]}"
    balances, written_off, payouts = runs[0]
    # The rules, from scratch: each player's money after the correction.
    for player in PLAYERS:
        staked = sum(stake for p, _, stake in bets if p == player)
        paid_first = sum(payout(stake, s, first) for p, s, stake in bets if p == player)
        paid_second = sum(payout(stake, s, second) for p, s, stake in bets if p == player)
        before = 20_000 - staked + paid_first
        if player in cash_out:
            before = 0
        expected = before - paid_first + paid_second
        assert written_off.get(player, 0) == max(0, -expected)
        assert balances[player] == max(0, expected)
    assert [p for _, p in payouts] == [payout(stake, s, second) for _, s, stake in bets]
