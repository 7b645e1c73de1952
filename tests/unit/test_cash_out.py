"""Cash-out in the core: quotes from current prices less the margin, refused
while a leg's market takes no bets or is in play with a delay; a quote accepted
at most once, with double-entry postings; partial cash-out; a cashed-out bet
takes no part in later results."""

from __future__ import annotations

from fractions import Fraction
from math import floor

from ledger_driver import Ledger

from ironbook.core import (
    Accepted,
    BetLeg,
    CashOut,
    CashOutQuote,
    CashOutReply,
    CreateMarket,
    PlaceBet,
    QuoteCashOut,
    ReadRefusal,
    ResettleMarket,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    acting,
    check_invariants,
    decide,
    issued,
)
from ironbook.core.odds import Ladder, PlaceTerms, parse_odds

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


MARGIN = Fraction(95, 100)  # the default 5% margin


def market(ledger: Ledger, market_id: str, in_play: bool = False, delay_s: int = 0) -> None:
    ledger.ok(
        CreateMarket(
            request_id=ledger.request_id(),
            market_id=market_id,
            event_id="e",
            name=market_id,
            selections=(
                SelectionSpec("a", "A", parse_odds("5/1")),
                SelectionSpec("b", "B", parse_odds("evs")),
            ),
            ladder=Ladder(kind="fractional", display="fractional"),
            place_terms=PlaceTerms(1, 5, 3),
            in_play=in_play,
            bet_delay_s=delay_s,
        )
    )


def price(ledger: Ledger, market_id: str, text: str) -> None:
    ledger.ok(
        UpdatePrices(
            request_id=ledger.request_id(),
            market_id=market_id,
            prices=(SelectionPrice("a", parse_odds(text)),),
        )
    )


def book() -> Ledger:
    ledger = Ledger(now_ms=1_000)
    ledger.open_account("punter", 100_000)
    ledger.open_account("other", 100_000)
    market(ledger, "m1")
    market(ledger, "m2")
    return ledger


def bet(ledger: Ledger, stake: int, *legs: str, each_way: bool = False) -> str:
    reply = ledger.ok(
        PlaceBet(
            request_id=ledger.request_id(),
            account_id="punter",
            stake_minor=stake,
            legs=tuple(BetLeg(m, "a", parse_odds("5/1")) for m in legs),
            each_way=each_way,
        )
    )
    return reply.bet_id  # type: ignore[union-attr]


def quote(ledger: Ledger, bet_id: str, stake: int | None = None, account: str = "punter"):
    outcome = decide(
        ledger.state,
        issued(
            QuoteCashOut(request_id="q", account_id=account, bet_id=bet_id, stake_minor=stake),
            PEOPLE,
        ),
        ledger.now_ms,
    )
    assert isinstance(outcome, Accepted) and outcome.events == ()
    return outcome.result


def accept(ledger: Ledger, q: CashOutQuote, request_id: str | None = None) -> CashOut:
    return CashOut(
        request_id=request_id or ledger.request_id(),
        account_id="punter",
        bet_id=q.bet_id,
        quote_id=q.quote_id,
        amount_minor=q.amount_minor,
        stake_minor=q.stake_minor,
    )


def test_the_quote_is_the_fair_value_at_current_prices_less_the_margin() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1")
    price(ledger, "m1", "2/1")  # shortened from 5/1
    q = quote(ledger, bet_id)
    assert isinstance(q, CashOutQuote)
    assert q.amount_minor == floor(1_000 * Fraction(6, 3) * MARGIN) == 1_900
    assert q.expires_ms == ledger.now_ms + 10_000


def test_an_accumulator_quote_counts_won_legs_in_full() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1", "m2")
    ledger.close("m1")
    ledger.ok(SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("a"),)))
    price(ledger, "m2", "100/30")
    q = quote(ledger, bet_id)
    assert isinstance(q, CashOutQuote)
    assert q.amount_minor == floor(1_000 * 6 * Fraction(6, 1) / Fraction(13, 3) * MARGIN)


def test_an_each_way_quote_values_both_parts() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1", each_way=True)
    price(ledger, "m1", "9/4")
    q = quote(ledger, bet_id)
    assert isinstance(q, CashOutQuote)
    win = Fraction(6) / Fraction(13, 4)
    place = Fraction(2) / (1 + Fraction(9, 20))
    assert q.amount_minor == floor(1_000 * (win + place) * MARGIN)


def test_accepting_pays_once_with_balanced_postings() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1")
    price(ledger, "m1", "2/1")
    q = quote(ledger, bet_id)
    command = accept(ledger, q)
    reply = ledger.ok(command)
    assert isinstance(reply, CashOutReply)
    assert (reply.status, reply.amount_minor, reply.stake_minor) == ("cashed_out", 1_900, 0)
    assert ledger.balance("punter") == 100_000 - 1_000 + 1_900
    assert ledger.held() == 0
    assert ledger.house() == -900
    assert check_invariants(ledger.state) == []
    # The same request again: the first answer, no money moves.
    assert ledger.ok(command) == reply
    assert ledger.balance("punter") == 100_900
    # The same quote under another request id: the bet is no longer open.
    assert ledger.refused(accept(ledger, q)) == "cash_out_unavailable"
    assert ledger.balance("punter") == 100_900
    bet_state = ledger.state.bets[bet_id]
    assert (bet_state.status, bet_state.cashed_out_minor) == ("cashed_out", 1_900)


def test_a_quote_stands_only_while_prices_and_the_expiry_do() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1")
    q = quote(ledger, bet_id)
    assert isinstance(q, CashOutQuote)
    price(ledger, "m1", "2/1")
    assert ledger.refused(accept(ledger, q)) == "quote_changed"
    q = quote(ledger, bet_id)
    ledger.advance(10_001)
    assert ledger.refused(accept(ledger, q)) == "quote_expired"
    forged = CashOut(
        request_id=ledger.request_id(),
        account_id="punter",
        bet_id=bet_id,
        quote_id=q.quote_id,
        amount_minor=q.amount_minor + 1,
    )
    assert ledger.refused(forged) == "invalid_quote"
    stolen = CashOut(
        request_id=ledger.request_id(),
        account_id="other",
        bet_id=bet_id,
        quote_id=q.quote_id,
        amount_minor=q.amount_minor,
    )
    assert ledger.refused(stolen) == "unknown_bet"
    assert ledger.state.bets[bet_id].status == "open"
    assert ledger.balance("punter") == 99_000


def test_no_cash_out_while_a_market_is_suspended_or_in_play_delayed() -> None:
    ledger = book()
    market(ledger, "live", in_play=True, delay_s=5)
    suspended = bet(ledger, 1_000, "m1")
    ledger.ok(SuspendMarket(request_id=ledger.request_id(), market_id="m1"))
    refusal = quote(ledger, suspended)
    assert isinstance(refusal, ReadRefusal) and refusal.code == "cash_out_unavailable"
    assert isinstance(quote(ledger, suspended, account="other"), ReadRefusal)
    reply = ledger.ok(
        PlaceBet(
            request_id=ledger.request_id(),
            account_id="punter",
            stake_minor=1_000,
            legs=(BetLeg("m2", "a", parse_odds("5/1")), BetLeg("live", "a", parse_odds("5/1"))),
        )
    )
    assert reply.status == "pending"  # type: ignore[union-attr]
    refusal = quote(ledger, reply.bet_id)  # type: ignore[union-attr]
    assert isinstance(refusal, ReadRefusal) and refusal.code == "cash_out_unavailable"


def test_partial_cash_out_keeps_the_rest_running() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1", each_way=True)
    price(ledger, "m1", "2/1")
    q = quote(ledger, bet_id, stake=400)
    assert isinstance(q, CashOutQuote)
    reply = ledger.ok(accept(ledger, q))
    assert isinstance(reply, CashOutReply)
    assert (reply.status, reply.stake_minor) == ("open", 600)
    assert ledger.held() == 1_200
    placed = ledger.state.bets[bet_id]
    assert placed.potential_payout_minor == 600 * 6 + 600 * 2
    assert check_invariants(ledger.state) == []
    ledger.close("m1")
    ledger.ok(SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("a"),)))
    assert placed.payout_minor == 600 * 6 + 600 * 2
    assert ledger.balance("punter") == 100_000 - 2_000 + q.amount_minor + 4_800
    assert check_invariants(ledger.state) == []
    too_little = quote(ledger, bet_id, stake=1_000)
    assert isinstance(too_little, ReadRefusal)


def test_a_partial_cash_out_must_leave_the_minimum_stake() -> None:
    ledger = book()
    bet_id = bet(ledger, 1_000, "m1")
    refusal = quote(ledger, bet_id, stake=995)
    assert isinstance(refusal, ReadRefusal) and refusal.code == "stake_too_low"
    refusal = quote(ledger, bet_id, stake=1_001)
    assert isinstance(refusal, ReadRefusal) and refusal.code == "invalid_amount"


def test_a_cashed_out_bet_keeps_its_cash_out_through_void_resettle_and_rollback() -> None:
    ledger = book()
    cashed = bet(ledger, 1_000, "m1")
    kept = bet(ledger, 1_000, "m1")
    q = quote(ledger, cashed)
    ledger.ok(accept(ledger, q))
    after_cash_out = ledger.balance("punter")
    ledger.close("m1")
    ledger.ok(SettleMarket(request_id=ledger.request_id(), market_id="m1", winners=(Winner("a"),)))
    assert ledger.state.bets[cashed].status == "cashed_out"
    assert ledger.balance("punter") == after_cash_out + 6_000
    ledger.ok(VoidMarket(request_id=ledger.request_id(), market_id="m1", actor="ops", reason="r"))
    assert ledger.balance("punter") == after_cash_out + 1_000
    ledger.ok(
        ResettleMarket(
            request_id=ledger.request_id(),
            market_id="m1",
            winners=(Winner("b"),),
            actor="ops",
            reason="r",
        )
    )
    ledger.ok(
        RollbackSettlement(request_id=ledger.request_id(), market_id="m1", actor="ops", reason="r")
    )
    assert ledger.state.bets[cashed].status == "cashed_out"
    assert ledger.state.bets[cashed].cashed_out_minor == q.amount_minor
    assert ledger.state.bets[kept].status == "open"
    assert ledger.balance("punter") == after_cash_out
    assert check_invariants(ledger.state) == []
