"""Random command sequences through the core, checked against an independent
model of the rules after every step.

The model below is written from the rules (ARCHITECTURE.md and issue 2), not
from the core: it predicts which refusal codes a command may get, every
player's balance, every bet's status and payout, and what a retried request id
must return. After each step the machine also checks the ledger's invariants,
that every event's postings sum to zero, and that replaying the log from empty
(and a snapshot round trip) gives the same state hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import floor

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from ledger_driver import DAY_MS, HOUR_MS, Ledger

from ironbook.core import (
    CASHIER,
    Accepted,
    AdjustBalance,
    AnyCommand,
    AnyReply,
    ArchiveReply,
    ArchiveSettled,
    BetLeg,
    BetReply,
    CashOut,
    CashOutQuote,
    CloseMarket,
    CreateMarket,
    Deposit,
    LedgerConfig,
    OpenAccount,
    PlaceBet,
    QuoteCashOut,
    Rejected,
    ResettleMarket,
    ResumeMarket,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SelfExclude,
    SetDepositLimits,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    Withdraw,
    acting,
    apply,
    check_invariants,
    decide,
    decode_events,
    encode_events,
    issued,
    new_state,
    restore_snapshot,
    snapshot_bytes,
    state_hash,
)
from ironbook.core.events import BetPlaced, MarketResulted, Refusal
from ironbook.core.odds import PlaceTerms, as_price, hundredths_exact

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


RETENTION_MS = DAY_MS
RESETTLE_WINDOW_MS = 2 * DAY_MS
BET_RETENTION_MS = 3 * DAY_MS
FINAL = ("settled", "voided")
MAX_STAKE_MINOR = 5_000
MAX_LIABILITY_MINOR = 20_000
MAX_LEGS = 3
MIN_STAKE_MINOR = 10
MAX_AMOUNT_MINOR = 10**12
LIMIT_DELAY_MS = DAY_MS
WINDOWS_MS = {"day": DAY_MS, "week": 7 * DAY_MS, "month": 30 * DAY_MS}

PLAYERS = ("p0", "p1", "p2")
MARKETS = ("m0", "m1", "m2", "m3")
STARTING_MARKETS = MARKETS[:3]
SELECTIONS = ("s0", "s1", "s2")
LADDER_PRICES = (101, 150, 200, 250, 300, 500, 1_000)
PLACE_TERMS = PlaceTerms(1, 4, 2)
"""Every market offers each-way at a quarter the odds, 2 places."""
CASH_OUT_MARGIN = Fraction(95, 100)

# Valid choices come first and more often: most commands should do something.
account_ids = st.sampled_from((*PLAYERS, *PLAYERS, *PLAYERS, "sys:cashier", "ghost"))
new_account_ids = st.sampled_from(("p3", *PLAYERS, "sys:house", "bad id", ""))
market_ids = st.sampled_from((*MARKETS, *MARKETS, *MARKETS, "nowhere"))
selection_ids = st.sampled_from((*SELECTIONS, *SELECTIONS, *SELECTIONS, "zz"))
amounts = st.sampled_from((500, 1_000, 100, 2_500, 7_000, 1, 0, -5)) | st.integers(1, 3_000)
limit_values = st.sampled_from((None, None, 0, 300, 1_000, 5_000))
prices = st.sampled_from(LADDER_PRICES)
requested_odds = st.sampled_from(("current", "current", "current", "higher", "lower", 201, 100))
policies = st.sampled_from(("none", "better", "any"))
stakes = st.sampled_from((100, 250, 1_000, 10, 3_000, 5, 6_000)) | st.integers(10, 2_000)
reasons = st.sampled_from(("why", "why", "why", " "))
"""A blank reason is refused (the actor is the principal, always there)."""
winner_lists = st.lists(
    st.tuples(
        selection_ids,
        st.sampled_from((1, 1, 1, 1, 1, 2, 3, 0, 4)),
        st.sampled_from((1, 1, 1, 2, 3, 0, 4)),
    ),
    max_size=3,
)
valid_winner_lists = st.lists(
    st.tuples(
        st.sampled_from(SELECTIONS), st.sampled_from((1, 1, 1, 2, 3)), st.sampled_from((1, 2, 3))
    ),
    max_size=3,
    unique_by=lambda winner: winner[0],
)
VOID = "void"


def valid_id(value: str) -> bool:
    return 0 < len(value) <= 64 and value.isprintable() and not any(c.isspace() for c in value)


def valid_amount(amount_minor: int) -> bool:
    return 0 < amount_minor <= MAX_AMOUNT_MINOR


# The model.


@dataclass
class ModelLimit:
    limit_minor: int | None = None
    pending: tuple[int | None, int] | None = None

    def effective(self, now_ms: int) -> int | None:
        if self.pending is not None and now_ms >= self.pending[1]:
            return self.pending[0]
        return self.limit_minor

    def change(self, value: int | None, now_ms: int) -> None:
        """A tighter limit (or the first one) holds at once; a looser one or
        a removal only after the cooling-off. Either replaces a pending change."""
        current = self.effective(now_ms)
        self.limit_minor, self.pending = current, None
        if current is None or (value is not None and value <= current):
            self.limit_minor = value
        else:
            self.pending = (value, now_ms + LIMIT_DELAY_MS)


@dataclass
class ModelAccount:
    balance_minor: int = 0
    excluded_until_ms: int = 0
    limits: dict[str, ModelLimit] = field(default_factory=dict)
    deposits: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ModelMarket:
    prices: dict[str, int]
    status: str = "open"
    result: str | dict[str, tuple[int, int]] | None = None
    """VOID, or selection -> (runners tied, position) of the placed runners."""
    bet_ids: list[str] = field(default_factory=list)
    final_ms: int | None = None
    """When its latest result (settled or voided) was logged; None while it
    has none."""
    archive_due_ms: int | None = None
    """When an archive run looks at it next: a retention window after its
    latest result, or after the run that found a bet on it still live."""


@dataclass
class ModelBet:
    account_id: str
    stake_minor: int
    legs: list[tuple[str, str, int]]
    potential_minor: int
    status: str = "open"
    payout_minor: int = 0
    each_way: bool = False
    cashed_out_minor: int = 0

    @property
    def paid_minor(self) -> int:
        return 0 if self.status == "open" else self.payout_minor

    @property
    def staked_minor(self) -> int:
        return 2 * self.stake_minor if self.each_way else self.stake_minor


@dataclass
class Remembered:
    command: AnyCommand
    reply: AnyReply
    at_ms: int


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.accounts: dict[str, ModelAccount] = {}
        self.markets: dict[str, ModelMarket] = {}
        self.bets: dict[str, ModelBet] = {}
        self.cashier_minor = 0
        self.log_now_ms = 0
        self.clock_ms = 0
        self.seen: dict[str, Remembered] = {}
        self.request_numbers = 0
        self.slice_bets = 1_000
        self.events_checked = 0
        self.log_before = 0
        self.follower = new_state(self.ledger.state.config)
        self.follower_applied = 0

    @initialize(
        slice_bets=st.sampled_from((1, 2, 1_000)),
        deposits=st.lists(st.sampled_from((5_000, 1_000, 0)), min_size=3, max_size=3),
        odds=st.lists(st.lists(prices, min_size=3, max_size=3), min_size=3, max_size=3),
    )
    def start(self, slice_bets: int, deposits: list[int], odds: list[list[int]]) -> None:
        """Players with money and open markets, so most examples bet."""
        self.slice_bets = slice_bets
        self.ledger = Ledger(
            LedgerConfig(
                min_stake_minor=MIN_STAKE_MINOR,
                max_stake_minor=MAX_STAKE_MINOR,
                max_liability_minor=MAX_LIABILITY_MINOR,
                max_legs=MAX_LEGS,
                idempotency_retention_ms=RETENTION_MS,
                result_slice_bets=slice_bets,
                resettle_window_ms=RESETTLE_WINDOW_MS,
                bet_retention_ms=BET_RETENTION_MS,
            )
        )
        self.follower = new_state(self.ledger.state.config)
        for account_id, amount in zip(PLAYERS, deposits, strict=True):
            self.run(OpenAccount(request_id=self.next_request_id(), account_id=account_id))
            if amount:
                self.run(
                    Deposit(
                        request_id=self.next_request_id(),
                        account_id=account_id,
                        amount_minor=amount,
                        reason="test top-up",
                    )
                )
        for market_id, market_odds in zip(STARTING_MARKETS, odds, strict=True):
            self.create_market(market_id, market_odds, off_ladder=False)

    # Running one command: the model says which refusals are possible; the
    # core must refuse with one of them, or accept when there are none.

    def next_request_id(self) -> str:
        self.request_numbers += 1
        return f"r{self.request_numbers}"

    def run(self, command: AnyCommand, clock_ms: int | None = None) -> None:
        decide_ms = self.clock_ms if clock_ms is None else clock_ms
        at_ms = max(decide_ms, self.log_now_ms)
        allowed = self.refusals(command, at_ms)
        self.log_before = len(self.ledger.log)
        outcome = self.ledger.submit(command, now_ms=decide_ms)
        assert outcome.events, f"a fresh request id must log something: {command!r}"
        for event in outcome.events:
            assert event.at_ms == at_ms
            assert event.request_id == command.request_id
            assert sum(amount for _, amount in event.postings) == 0, event
        self.log_now_ms = at_ms
        if isinstance(outcome, Rejected):
            assert allowed, f"{command!r} refused with {outcome.code}; the rules accept it"
            assert outcome.code in allowed, f"{outcome.code} not in {allowed} for {command!r}"
            [event] = outcome.events
            assert event.postings == ()
            reply: AnyReply = Refusal(code=outcome.code, message=outcome.message)
        else:
            assert not allowed, f"{command!r} accepted; the rules refuse it: {allowed}"
            self.accept(command, outcome, at_ms)
            reply = outcome.result
        self.seen[command.request_id] = Remembered(command, reply, at_ms)

    def refusals(self, command: AnyCommand, now_ms: int) -> set[str]:
        if isinstance(command, CashOut):
            return self.cash_out_refusals(command)
        account = self.accounts.get(getattr(command, "account_id", ""))
        if isinstance(command, OpenAccount):
            if not valid_id(command.account_id) or command.account_id.startswith("sys:"):
                return {"invalid_account_id"}
            return {"account_exists"} if account else set()
        if isinstance(command, (Deposit, Withdraw, AdjustBalance, SetDepositLimits, SelfExclude)):
            if account is None:
                return {"unknown_account"}
            return self.account_refusals(command, account, now_ms)
        if isinstance(command, PlaceBet):
            return self.bet_refusals(command, account, now_ms)
        market = self.markets.get(command.market_id)
        if isinstance(command, CreateMarket):
            refusals = {"market_exists"} if market else set()
            if any(spec.odds not in LADDER_PRICES for spec in command.selections):
                refusals.add("off_ladder")
            return refusals
        if market is None:
            return {"unknown_market"}
        refusals = self.market_refusals(command, market)
        results = (SettleMarket, VoidMarket, ResettleMarket, RollbackSettlement)
        if (
            isinstance(command, results)
            and market.final_ms is not None
            and now_ms > market.final_ms + RESETTLE_WINDOW_MS
        ):
            refusals.add("resettle_window_closed")
        return refusals

    def account_refusals(self, command, account: ModelAccount, now_ms: int) -> set[str]:
        refusals: set[str] = set()
        if isinstance(command, Deposit):
            if not valid_amount(command.amount_minor):
                refusals.add("invalid_amount")
            if now_ms < account.excluded_until_ms:
                refusals.add("self_excluded")
            for period, limit in account.limits.items():
                limit_minor = limit.effective(now_ms)
                start_ms = now_ms - WINDOWS_MS[period]
                used = sum(amount for at_ms, amount in account.deposits if at_ms > start_ms)
                if limit_minor is not None and used + command.amount_minor > limit_minor:
                    refusals.add("deposit_limit_exceeded")
        elif isinstance(command, Withdraw):
            if not valid_amount(command.amount_minor):
                refusals.add("invalid_amount")
            elif command.amount_minor > account.balance_minor:
                refusals.add("insufficient_funds")
        elif isinstance(command, AdjustBalance):
            if command.amount_minor == 0 or not valid_amount(abs(command.amount_minor)):
                refusals.add("invalid_amount")
            if not command.reason.strip():
                refusals.add("missing_reason")
            if account.balance_minor + command.amount_minor < 0:
                refusals.add("insufficient_funds")
        elif isinstance(command, SelfExclude) and not 1 <= command.days <= 36_500:
            refusals.add("invalid_days")
        return refusals

    def market_refusals(self, command, market: ModelMarket) -> set[str]:
        status = market.status
        if isinstance(command, UpdatePrices):
            refusals = set() if status in ("open", "suspended") else {"market_closed"}
            ids = [price.selection_id for price in command.prices]
            if not 1 <= len(ids) <= len(market.prices):
                refusals.add("invalid_odds")
            if len(set(ids)) != len(ids) or not set(ids) <= set(market.prices):
                refusals.add("unknown_selection")
            if any(price.odds not in LADDER_PRICES for price in command.prices):
                refusals.add("off_ladder")
            return refusals
        moves = {
            SuspendMarket: ("open",),
            ResumeMarket: ("suspended",),
            CloseMarket: ("open", "suspended"),
            SettleMarket: ("suspended", "closed"),
            VoidMarket: ("open", "suspended", "closed", "settled"),
            ResettleMarket: ("settled", "voided"),
            RollbackSettlement: ("settled", "voided"),
        }
        refusals = set() if status in moves[type(command)] else {"invalid_status_change"}
        if isinstance(command, (VoidMarket, ResettleMarket, RollbackSettlement)) and not (
            command.reason.strip()
        ):
            refusals.add("missing_reason")
        if isinstance(command, (SettleMarket, ResettleMarket)):
            ids = [winner.selection_id for winner in command.winners]
            if len(set(ids)) != len(ids) or not set(ids) <= set(market.prices):
                refusals.add("invalid_result")
            if any(not 1 <= w.dead_heat <= len(market.prices) for w in command.winners):
                refusals.add("invalid_result")
            if any(not 1 <= w.position <= len(market.prices) for w in command.winners):
                refusals.add("invalid_result")
        return refusals

    def cash_out_refusals(self, command: CashOut) -> set[str]:
        bet = self.bets.get(command.bet_id)
        if bet is None or bet.account_id != command.account_id:
            return {"unknown_bet"}
        refusals: set[str] = set()
        if self.cash_out_value(bet, bet.stake_minor) is None:
            refusals.add("cash_out_unavailable")
        stake = bet.stake_minor if command.stake_minor is None else command.stake_minor
        if not 1 <= stake <= bet.stake_minor:
            refusals.add("invalid_amount")
        elif 0 < bet.stake_minor - stake < MIN_STAKE_MINOR:
            refusals.add("stake_too_low")
        if refusals:
            return refusals
        if self.cash_out_value(bet, stake) != command.amount_minor:
            refusals.add("invalid_quote")
        return refusals

    def cash_out_value(self, bet: ModelBet, stake_minor: int) -> int | None:
        """The rules: the stake × Σ over parts of Π legs (a leg won at its
        price and dead heat, a void one at 1, one to run at its struck return
        ÷ its current return) less the margin; None while the bet is not open
        or a leg to run is on a market that is not open."""
        if bet.status != "open":
            return None
        total = Fraction(0)
        for place in (False, True) if bet.each_way else (False,):
            part = Fraction(1)
            for market_id, selection_id, odds in bet.legs:
                market = self.markets[market_id]
                fraction = Fraction(
                    PLACE_TERMS.fraction_numerator, PLACE_TERMS.fraction_denominator
                )
                scale = fraction if place else 1
                struck = 1 + Fraction(odds - 100, 100) * scale
                if market.result is None:
                    if market.status != "open":
                        return None
                    part *= struck / (1 + Fraction(market.prices[selection_id] - 100, 100) * scale)
                elif market.result != VOID:
                    assert isinstance(market.result, dict)
                    paid, tied = self.places_paid(market.result, selection_id, place)
                    part *= struck * Fraction(paid, tied)
            total += part
        return floor(stake_minor * total * CASH_OUT_MARGIN)

    @staticmethod
    def places_paid(result: dict[str, tuple[int, int]], selection_id: str, place: bool):
        """(places paid, runners tied) for a selection in a result: (0, 1) if
        it did not win (or place, for the place part)."""
        tied, position = result.get(selection_id, (1, 99))
        places = PLACE_TERMS.places if place else 1
        return max(0, min(tied, places - position + 1)), tied

    def bet_refusals(self, command: PlaceBet, account: ModelAccount | None, now_ms: int):
        if account is None:
            return {"unknown_account"}
        refusals: set[str] = set()
        if now_ms < account.excluded_until_ms:
            refusals.add("self_excluded")
        if command.stake_minor < MIN_STAKE_MINOR:
            refusals.add("stake_too_low")
        if command.stake_minor > MAX_STAKE_MINOR:
            refusals.add("stake_too_high")
        if not command.legs:
            refusals.add("no_legs")
        if len(command.legs) > MAX_LEGS:
            refusals.add("too_many_legs")
        parts = 2 if command.each_way else 1
        if parts * command.stake_minor > account.balance_minor:
            refusals.add("insufficient_funds")
        odds = self.accepted_odds(command, refusals)
        if odds is not None and command.legs:
            potential = potential_of(command.stake_minor, odds, command.each_way)
            liability = potential - parts * command.stake_minor
            for leg in command.legs:
                held = self.liability(leg.market_id, leg.selection_id)
                if held + liability > MAX_LIABILITY_MINOR:
                    refusals.add("liability_exceeded")
        return refusals

    def accepted_odds(self, command: PlaceBet, refusals: set[str]) -> list[int] | None:
        """The odds each leg is accepted at, or None (adding the refusals) if
        any leg is refused."""
        odds: list[int] = []
        seen: dict[str, str] = {}
        for leg in command.legs:
            market = self.markets.get(leg.market_id)
            if market is None:
                refusals.add("unknown_market")
                continue
            if leg.selection_id not in market.prices:
                refusals.add("unknown_selection")
                continue
            if leg.market_id in seen:
                same = seen[leg.market_id] == leg.selection_id
                refusals.add("duplicate_selection" if same else "related_legs")
            seen[leg.market_id] = leg.selection_id
            if market.status == "suspended":
                refusals.add("market_suspended")
            elif market.status != "open":
                refusals.add("market_closed")
            if not 101 <= leg.odds <= 100_000:
                refusals.add("invalid_odds")
            current = market.prices[leg.selection_id]
            policy = command.price_change
            if current != leg.odds and not (
                policy == "any" or (policy == "better" and current > leg.odds)
            ):
                refusals.add("price_changed")
            odds.append(current)
        leg_refusals = {
            "unknown_market",
            "unknown_selection",
            "duplicate_selection",
            "related_legs",
            "market_suspended",
            "market_closed",
            "invalid_odds",
            "price_changed",
        }
        return None if refusals & leg_refusals else odds

    def liability(self, market_id: str, selection_id: str) -> int:
        return sum(
            bet.potential_minor - bet.staked_minor
            for bet in self.bets.values()
            if bet.status == "open" and (market_id, selection_id) in {leg[:2] for leg in bet.legs}
        )

    # What acceptance does, by the rules.

    def accept(  # noqa: C901 — the model: one branch per command kind, as the rules read
        self, command: AnyCommand, outcome: Accepted, at_ms: int
    ) -> None:
        if isinstance(command, OpenAccount):
            self.accounts[command.account_id] = ModelAccount()
        elif isinstance(command, Deposit):
            account = self.accounts[command.account_id]
            account.balance_minor += command.amount_minor
            account.deposits.append((at_ms, command.amount_minor))
            self.cashier_minor -= command.amount_minor
        elif isinstance(command, Withdraw):
            self.accounts[command.account_id].balance_minor -= command.amount_minor
            self.cashier_minor += command.amount_minor
        elif isinstance(command, AdjustBalance):
            self.accounts[command.account_id].balance_minor += command.amount_minor
        elif isinstance(command, SetDepositLimits):
            limits = self.accounts[command.account_id].limits
            for period, value in (
                ("day", command.day_minor),
                ("week", command.week_minor),
                ("month", command.month_minor),
            ):
                limits.setdefault(period, ModelLimit()).change(value, at_ms)
        elif isinstance(command, SelfExclude):
            account = self.accounts[command.account_id]
            until_ms = max(account.excluded_until_ms, at_ms + command.days * DAY_MS)
            account.excluded_until_ms = until_ms
            assert outcome.result.excluded_until_ms == until_ms
        elif isinstance(command, CreateMarket):
            self.markets[command.market_id] = ModelMarket(
                prices={spec.selection_id: spec.odds for spec in command.selections}
            )
        elif isinstance(command, UpdatePrices):
            for price in command.prices:
                self.markets[command.market_id].prices[price.selection_id] = price.odds
        elif isinstance(command, (SuspendMarket, ResumeMarket, CloseMarket)):
            target = {SuspendMarket: "suspended", ResumeMarket: "open", CloseMarket: "closed"}
            self.markets[command.market_id].status = target[type(command)]
        elif isinstance(command, PlaceBet):
            self.accept_bet(command, outcome)
        elif isinstance(command, CashOut):
            self.accept_cash_out(command)
        elif isinstance(command, VoidMarket):
            self.accept_result(command.market_id, VOID, outcome, at_ms)
        elif isinstance(command, RollbackSettlement):
            self.accept_result(command.market_id, None, outcome, at_ms)
        else:
            assert isinstance(command, (SettleMarket, ResettleMarket))
            result = {w.selection_id: (w.dead_heat, w.position) for w in command.winners}
            self.accept_result(command.market_id, result, outcome, at_ms)
        if hasattr(outcome.result, "balance_minor") and hasattr(command, "account_id"):
            model_balance = self.accounts[command.account_id].balance_minor
            assert outcome.result.balance_minor == model_balance

    def accept_bet(self, command: PlaceBet, outcome: Accepted) -> None:
        odds = self.accepted_odds(command, set())
        assert odds is not None
        [event] = outcome.events
        assert isinstance(event, BetPlaced)
        reply = outcome.result
        assert isinstance(reply, BetReply)
        assert reply.bet_id not in self.bets
        assert [hundredths_exact(as_price(leg.odds)) for leg in event.legs] == odds
        potential = potential_of(command.stake_minor, odds, command.each_way)
        assert event.potential_payout_minor == reply.potential_payout_minor == potential
        parts = 2 if command.each_way else 1
        self.accounts[command.account_id].balance_minor -= parts * command.stake_minor
        self.bets[reply.bet_id] = ModelBet(
            account_id=command.account_id,
            stake_minor=command.stake_minor,
            legs=[
                (leg.market_id, leg.selection_id, price)
                for leg, price in zip(command.legs, odds, strict=True)
            ],
            potential_minor=potential,
            each_way=command.each_way,
        )
        for leg in command.legs:
            self.markets[leg.market_id].bet_ids.append(reply.bet_id)

    def accept_result(
        self,
        market_id: str,
        result: str | dict[str, tuple[int, int]] | None,
        outcome: Accepted,
        at_ms: int,
    ) -> None:
        """A result, or None: a rollback, back to closed with no result."""
        market = self.markets[market_id]
        market.result = result
        if result is None:
            market.status = "closed"
            market.final_ms = market.archive_due_ms = None
        else:
            market.status = "voided" if result == VOID else "settled"
            market.final_ms = at_ms
            market.archive_due_ms = at_ms + BET_RETENTION_MS
        delta_minor: dict[str, int] = {}
        # A cashed-out bet is out of every later result.
        affected = [b for b in market.bet_ids if self.bets[b].status != "cashed_out"]
        for bet_id in affected:
            bet = self.bets[bet_id]
            paid_before = bet.paid_minor
            bet.status, bet.payout_minor = self.expected_outcome(bet)
            delta_minor[bet.account_id] = (
                delta_minor.get(bet.account_id, 0) + bet.paid_minor - paid_before
            )
        # The first slice is the command's; the driver logs the rest at once.
        slices = [event for event in self.ledger.log[self.log_before :]]
        assert all(isinstance(piece, MarketResulted) for piece in slices)
        assert outcome.events == (slices[0],)
        assert len(slices) == max(1, -(-len(market.bet_ids) // self.slice_bets))
        assert [o.bet_id for piece in slices for o in piece.bets] == affected
        assert slices[0].reply == outcome.result
        assert all(piece.reply is None for piece in slices[1:])
        for piece in slices:
            for bet_outcome in piece.bets:
                self.assert_bet(bet_outcome.bet_id, bet_outcome.status, bet_outcome.payout_minor)
        written_off: dict[str, int] = {}
        for piece in slices:
            for account_id, amount_minor in piece.written_off:
                assert amount_minor > 0
                written_off[account_id] = written_off.get(account_id, 0) + amount_minor
        assert set(written_off) <= set(delta_minor)
        paid_minor = 0
        for account_id, delta in delta_minor.items():
            account = self.accounts[account_id]
            after = account.balance_minor + delta
            expected_written_off = max(0, -after)
            after = max(0, after)
            assert written_off.get(account_id, 0) == expected_written_off, account_id
            paid_minor += after - account.balance_minor
            account.balance_minor = after
        reply = outcome.result
        if len(slices) > 1:
            assert reply.status == "settling"
            assert reply.bets_affected == len(slices[0].bets)
            paid_by_slices = sum(
                amount
                for piece in slices
                for account_id, amount in piece.postings
                if not account_id.startswith("sys:")
            )
            assert paid_by_slices == paid_minor
            return
        assert reply.bets_affected == len(affected)
        assert reply.paid_minor == paid_minor
        assert reply.status == market.status

    def expected_outcome(self, bet: ModelBet) -> tuple[str, int]:
        """The rules: an each-way bet is a win bet and a place bet of its stake,
        lost only when both are, open while either is, void when both are."""
        if bet.status == "cashed_out":
            return "cashed_out", 0
        win = self.part_outcome(bet, place=False)
        if not bet.each_way:
            return win
        place = self.part_outcome(bet, place=True)
        if win[0] == place[0] == "lost":
            return "lost", 0
        if "open" in (win[0], place[0]):
            return "open", 0
        if win[0] == place[0] == "void":
            return "void", 2 * bet.stake_minor
        payout = win[1] + place[1]
        return ("won" if payout else "lost"), payout

    def part_outcome(self, bet: ModelBet, place: bool) -> tuple[str, int]:
        """A lost leg loses the part; otherwise a pending leg keeps it open; a
        part whose every leg is void is refunded; otherwise it pays stake ×
        the product of won legs' returns (the place part at a quarter the
        odds) × places paid ÷ runners tied, rounded down."""
        value = Fraction(bet.stake_minor)
        pending = False
        all_void = True
        for market_id, selection_id, odds in bet.legs:
            result = self.markets[market_id].result
            if result is None:
                pending = True
            elif result != VOID:
                assert isinstance(result, dict)
                paid, tied = self.places_paid(result, selection_id, place)
                if not paid:
                    return "lost", 0
                all_void = False
                profit = Fraction(odds - 100, 100)
                if place:
                    profit *= Fraction(
                        PLACE_TERMS.fraction_numerator, PLACE_TERMS.fraction_denominator
                    )
                value *= (1 + profit) * Fraction(paid, tied)
        if pending:
            return "open", 0
        if all_void:
            return "void", bet.stake_minor
        return "won", floor(value)

    def accept_cash_out(self, command: CashOut) -> None:
        bet = self.bets[command.bet_id]
        stake = bet.stake_minor if command.stake_minor is None else command.stake_minor
        self.accounts[bet.account_id].balance_minor += command.amount_minor
        bet.cashed_out_minor += command.amount_minor
        bet.stake_minor -= stake
        if bet.stake_minor:
            odds = [price for _, _, price in bet.legs]
            bet.potential_minor = potential_of(bet.stake_minor, odds, bet.each_way)
        else:
            bet.status = "cashed_out"
            bet.potential_minor = 0

    def assert_bet(self, bet_id: str, status: str, payout_minor: int) -> None:
        bet = self.bets[bet_id]
        assert (status, payout_minor) == (bet.status, bet.payout_minor), (bet_id, bet)

    # Rules: accounts and money.

    @rule(account_id=new_account_ids)
    def open_account(self, account_id: str) -> None:
        self.run(OpenAccount(request_id=self.next_request_id(), account_id=account_id))

    @rule(
        account_id=account_ids,
        amount=amounts,
        lag_ms=st.sampled_from((0, 0, 0, 1, HOUR_MS, 2 * DAY_MS)),
    )
    def deposit(self, account_id: str, amount: int, lag_ms: int) -> None:
        """Sometimes from a caller whose clock lags the log: log time must not
        go back, and a deposit window must not reopen."""
        command = Deposit(
            request_id=self.next_request_id(),
            account_id=account_id,
            amount_minor=amount,
            reason="test top-up",
        )
        self.run(command, clock_ms=self.clock_ms - lag_ms)

    @rule(account_id=account_ids, amount=amounts, everything=st.booleans())
    def withdraw(self, account_id: str, amount: int, everything: bool) -> None:
        account = self.accounts.get(account_id)
        if everything and account is not None and account.balance_minor:
            amount = account.balance_minor
        self.run(
            Withdraw(request_id=self.next_request_id(), account_id=account_id, amount_minor=amount)
        )

    @rule(account_id=account_ids, amount=amounts, sign=st.sampled_from((1, -1)), reason=reasons)
    def adjust(self, account_id: str, amount: int, sign: int, reason: str) -> None:
        self.run(
            AdjustBalance(
                request_id=self.next_request_id(),
                account_id=account_id,
                amount_minor=sign * amount,
                actor="ops",
                reason=reason,
            )
        )

    @rule(account_id=account_ids, day=limit_values, week=limit_values, month=limit_values)
    def set_limits(
        self, account_id: str, day: int | None, week: int | None, month: int | None
    ) -> None:
        self.run(
            SetDepositLimits(
                request_id=self.next_request_id(),
                account_id=account_id,
                day_minor=day,
                week_minor=week,
                month_minor=month,
            )
        )

    @rule(account_id=account_ids, days=st.sampled_from((1, 1, 2, 0, 36_501)))
    def self_exclude(self, account_id: str, days: int) -> None:
        self.run(SelfExclude(request_id=self.next_request_id(), account_id=account_id, days=days))

    # Rules: markets.

    @rule(
        market_id=market_ids,
        odds=st.lists(prices, min_size=3, max_size=3),
        off_ladder=st.booleans(),
    )
    def create_market(self, market_id: str, odds: list[int], off_ladder: bool) -> None:
        if off_ladder:
            odds = [201, *odds[1:]]
        self.run(
            CreateMarket(
                request_id=self.next_request_id(),
                market_id=market_id,
                event_id=f"e-{market_id}",
                name=market_id,
                selections=tuple(
                    SelectionSpec(selection_id=selection_id, name=selection_id, odds=price)
                    for selection_id, price in zip(SELECTIONS, odds, strict=True)
                ),
                place_terms=PLACE_TERMS,
            )
        )

    @rule(market_id=market_ids, selection_id=selection_ids, odds=prices | st.just(201))
    def update_price(self, market_id: str, selection_id: str, odds: int) -> None:
        self.run(
            UpdatePrices(
                request_id=self.next_request_id(),
                market_id=market_id,
                prices=(SelectionPrice(selection_id=selection_id, odds=odds),),
            )
        )

    @rule(market_id=market_ids, move=st.sampled_from((SuspendMarket, ResumeMarket, CloseMarket)))
    def change_status(self, market_id: str, move: type) -> None:
        self.run(move(request_id=self.next_request_id(), market_id=market_id))

    @rule(market_id=market_ids, winners=winner_lists, close_first=st.booleans())
    def settle(
        self, market_id: str, winners: list[tuple[str, int, int]], close_first: bool
    ) -> None:
        market = self.markets.get(market_id)
        if close_first and market is not None and market.status in ("open", "suspended"):
            self.run(CloseMarket(request_id=self.next_request_id(), market_id=market_id))
        self.run(
            SettleMarket(
                request_id=self.next_request_id(),
                market_id=market_id,
                winners=tuple(Winner(s, dead_heat=d, position=at) for s, d, at in winners),
            )
        )

    @rule(market_id=market_ids, reason=reasons)
    def void(self, market_id: str, reason: str) -> None:
        self.run(
            VoidMarket(
                request_id=self.next_request_id(), market_id=market_id, actor="ops", reason=reason
            )
        )

    @rule(market_id=market_ids, winners=winner_lists, reason=reasons)
    def resettle(self, market_id: str, winners: list[tuple[str, int, int]], reason: str) -> None:
        self.run(
            ResettleMarket(
                request_id=self.next_request_id(),
                market_id=market_id,
                winners=tuple(Winner(s, dead_heat=d, position=at) for s, d, at in winners),
                actor="ops",
                reason=reason,
            )
        )

    @rule(market_id=market_ids, reason=reasons)
    def rollback(self, market_id: str, reason: str) -> None:
        self.run(
            RollbackSettlement(
                request_id=self.next_request_id(),
                market_id=market_id,
                actor="ops",
                reason=reason,
            )
        )

    # Rules: bets.

    @rule(
        account_id=account_ids,
        stake=stakes,
        legs=st.lists(st.tuples(market_ids, selection_ids, requested_odds), max_size=4),
        policy=policies,
        each_way=st.booleans(),
    )
    def place_bet(
        self, account_id: str, stake: int, legs: list, policy: str, each_way: bool = False
    ) -> None:
        bet_legs = []
        for market_id, selection_id, wanted in legs:
            market = self.markets.get(market_id)
            current = market.prices.get(selection_id, 200) if market else 200
            odds = {"current": current, "higher": current + 10, "lower": current - 1}.get(
                wanted, wanted
            )
            bet_legs.append(BetLeg(market_id=market_id, selection_id=selection_id, odds=odds))
        self.run(
            PlaceBet(
                request_id=self.next_request_id(),
                account_id=account_id,
                stake_minor=stake,
                legs=tuple(bet_legs),
                price_change=policy,
                each_way=each_way,
            )
        )

    @precondition(lambda self: self.bets)
    @rule(
        data=st.data(),
        part=st.sampled_from((None, None, 1, 2, 3)),
        tamper=st.sampled_from((0, 0, 0, 0, 1)),
    )
    def cash_out(self, data: st.DataObject, part: int | None, tamper: int) -> None:
        """Ask for a quote (all or part of the stake) and accept it."""
        bet_id = data.draw(st.sampled_from(sorted(self.bets)), label="bet")
        bet = self.bets[bet_id]
        stake = None if part is None else max(1, bet.stake_minor * part // 4)
        query = QuoteCashOut(
            request_id=self.next_request_id(),
            account_id=bet.account_id,
            bet_id=bet_id,
            stake_minor=stake,
        )
        outcome = decide(self.ledger.state, issued(query, PEOPLE), self.clock_ms)
        assert isinstance(outcome, Accepted) and outcome.events == ()
        quote = outcome.result
        if isinstance(quote, CashOutQuote):
            assert quote.amount_minor == self.cash_out_value(bet, quote.stake_minor)
            amount, quote_id = quote.amount_minor + tamper, quote.quote_id
        else:
            amount, quote_id = 1, "no quote"
        self.run(
            CashOut(
                request_id=self.next_request_id(),
                account_id=bet.account_id,
                bet_id=bet_id,
                quote_id=quote_id,
                amount_minor=amount,
                stake_minor=stake,
            )
        )

    @rule(odds=st.lists(prices, min_size=3, max_size=3))
    def create_fresh_market(self, odds: list[int]) -> None:
        self.create_market(f"f{len(self.markets)}", odds, off_ladder=False)

    @precondition(lambda self: self.markets)
    @rule(data=st.data(), bets=st.integers(1, 3), policy=policies)
    def place_valid_bets(self, data: st.DataObject, bets: int, policy: str) -> None:
        """Bets most likely to be taken: players, live markets, current prices."""
        open_markets = [m for m, market in self.markets.items() if market.status == "open"]
        live = sorted(open_markets or self.markets)
        for _ in range(bets):
            account_id = data.draw(st.sampled_from(PLAYERS), label="player")
            stake = data.draw(st.integers(10, 1_500), label="stake")
            chosen = data.draw(
                st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True),
                label="markets",
            )
            legs = [
                (market_id, data.draw(st.sampled_from(SELECTIONS), label="selection"), "current")
                for market_id in chosen
            ]
            each_way = data.draw(st.booleans(), label="each way")
            self.place_bet(account_id, stake, legs, policy, each_way)

    @precondition(lambda self: self.markets)
    @rule(
        data=st.data(),
        account_id=st.sampled_from(PLAYERS),
        selections=st.lists(st.sampled_from(SELECTIONS), min_size=2, max_size=3, unique=True),
        stake=st.integers(10, 800),
    )
    def back_several_runners(
        self, data: st.DataObject, account_id: str, selections: list[str], stake: int
    ) -> None:
        """One player backs several runners in one race (the bets a result
        correction moves money both ways on)."""
        open_markets = sorted(m for m, market in self.markets.items() if market.status == "open")
        market_id = data.draw(st.sampled_from(open_markets or sorted(self.markets)), label="market")
        for selection_id in selections:
            self.place_bet(account_id, stake, [(market_id, selection_id, "current")], "none")

    @precondition(lambda self: self.markets)
    @rule(data=st.data(), winners=valid_winner_lists)
    def result_a_live_market(
        self, data: st.DataObject, winners: list[tuple[str, int, int]]
    ) -> None:
        with_bets = [m for m, market in self.markets.items() if market.bet_ids]
        market_id = data.draw(st.sampled_from(sorted(with_bets or self.markets)), label="market")
        if self.markets[market_id].status in ("settled", "voided"):
            self.cash_out_then_correct(market_id, winners, data)
        elif data.draw(st.booleans(), label="void"):
            self.void(market_id, reason="void")
        else:
            self.settle(market_id, winners, close_first=True)

    def cash_out_then_correct(
        self, market_id: str, winners: list[tuple[str, int, int]], data: st.DataObject
    ) -> None:
        """Bettors withdraw what they have, then the result is corrected: a
        resettlement that takes back winnings already withdrawn is written
        off to the house."""
        bettors = sorted(
            {
                self.bets[bet_id].account_id
                for bet_id in self.markets[market_id].bet_ids
                if bet_id in self.bets
            }
        )
        for account_id in bettors:
            balance_minor = self.accounts[account_id].balance_minor
            if balance_minor and data.draw(st.booleans(), label=f"{account_id} cashes out"):
                self.run(
                    Withdraw(
                        request_id=self.next_request_id(),
                        account_id=account_id,
                        amount_minor=balance_minor,
                    )
                )
        if data.draw(st.booleans(), label="void"):
            self.void(market_id, reason="void")
        else:
            self.resettle(market_id, winners, reason="stewards")

    # Rules: archiving.

    @rule(wait_ms=st.sampled_from((0, BET_RETENTION_MS, BET_RETENTION_MS + HOUR_MS)))
    def archive(self, wait_ms: int) -> None:
        """The leader's housekeeping: every market whose archive run is due
        leaves the state with its bets, if every bet on it is final and every
        market those bets have a leg on was resulted a retention window ago;
        else it is looked at again when the latest of those is past
        retention, or a retention window later while one is unresulted or a
        bet still open. (Often a retention window after now: most results
        are still recent.)"""
        self.clock_ms += wait_ms
        at_ms = max(self.clock_ms, self.log_now_ms)
        horizon_ms = at_ms - BET_RETENTION_MS
        due = [
            market_id
            for market_id, market in self.markets.items()
            if market.status in FINAL
            and market.archive_due_ms is not None
            and market.archive_due_ms <= at_ms
        ]

        def live_bets(market_id: str) -> list[ModelBet]:
            """Its bets still in the state (one archived with another of its
            markets is gone)."""
            return [self.bets[b] for b in self.markets[market_id].bet_ids if b in self.bets]

        def held_back_until(market_id: str) -> int | None:
            again_ms = [0]
            for bet in live_bets(market_id):
                finals = [self.markets[leg[0]].final_ms for leg in bet.legs]
                if bet.status == "open" or None in finals:
                    return at_ms + BET_RETENTION_MS
                again_ms += [
                    f + BET_RETENTION_MS for f in finals if f is not None and f > horizon_ms
                ]
            return max(again_ms) or None

        again = {market_id: held_back_until(market_id) for market_id in due}
        archived = [market_id for market_id in due if again[market_id] is None]
        log_length = len(self.ledger.log)
        outcome = self.ledger.submit(
            ArchiveSettled(request_id=self.next_request_id()), now_ms=self.clock_ms
        )
        assert isinstance(outcome, Accepted)
        assert outcome.result == ArchiveReply(
            markets=len(archived),
            bets=len({b for m in archived for b in self.markets[m].bet_ids if b in self.bets}),
        )
        # One event when anything was due (a stale queue entry, left by a
        # market resulted again, may make one with nothing else in it).
        logged = len(self.ledger.log) - log_length
        assert logged == 1 if due else logged in (0, 1)
        if logged:
            self.log_now_ms = at_ms
        for market_id in due:
            if market_id in archived:
                for bet_id in self.markets[market_id].bet_ids:
                    self.bets.pop(bet_id, None)
            else:
                self.markets[market_id].archive_due_ms = again[market_id]
        for market_id in archived:
            del self.markets[market_id]

    # Rules: time and retries.

    @rule(
        ms=st.sampled_from(
            (1, 999, HOUR_MS, DAY_MS - 1, DAY_MS, DAY_MS + 1, 8 * DAY_MS, 31 * DAY_MS)
        )
    )
    def advance(self, ms: int) -> None:
        self.clock_ms += ms

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.seen)), label="request_id")
        first = self.seen[request_id]
        if first.at_ms < self.ledger.state.now_ms - RETENTION_MS:
            self.run(first.command)  # forgotten: judged afresh
            return
        hash_before = state_hash(self.ledger.state)
        log_length = len(self.ledger.log)
        outcome = self.ledger.submit(first.command, now_ms=self.clock_ms)
        assert outcome.events == ()
        if isinstance(first.reply, Refusal):
            assert outcome == Rejected(code=first.reply.code, message=first.reply.message)
        else:
            assert outcome == Accepted(events=(), result=first.reply)
        assert len(self.ledger.log) == log_length
        assert state_hash(self.ledger.state) == hash_before

    # Invariants, after every step.

    @invariant()
    def postings_balance_and_books_hold(self) -> None:
        state = self.ledger.state
        for event in self.ledger.log[self.events_checked :]:
            assert sum(amount for _, amount in event.postings) == 0, event
        self.events_checked = len(self.ledger.log)
        assert sum(account.balance_minor for account in state.accounts.values()) == 0
        for account in state.accounts.values():
            if account.kind == "player":
                assert account.balance_minor >= 0, account
        assert check_invariants(state) == []
        assert state.now_ms == self.log_now_ms

    @invariant()
    def balances_match_the_model(self) -> None:
        state = self.ledger.state
        players = {a.account_id for a in state.accounts.values() if a.kind == "player"}
        assert players == set(self.accounts)
        for account_id, account in self.accounts.items():
            assert state.accounts[account_id].balance_minor == account.balance_minor, account_id
            assert state.accounts[account_id].excluded_until_ms == account.excluded_until_ms
        assert self.ledger.balance(CASHIER) == self.cashier_minor

    @invariant()
    def bets_and_markets_match_the_rules(self) -> None:
        state = self.ledger.state
        assert set(state.bets) == set(self.bets)
        for bet_id, bet in state.bets.items():
            self.assert_bet(bet_id, bet.status, bet.payout_minor)
        assert set(state.markets) == set(self.markets)
        for market_id, market in self.markets.items():
            core = state.markets[market_id]
            assert core.status == market.status
            assert {
                s: hundredths_exact(sel.odds) for s, sel in core.selections.items()
            } == market.prices
            assert core.bet_ids == market.bet_ids

    @invariant()
    def request_ids_are_remembered_for_the_retention_window(self) -> None:
        horizon_ms = self.ledger.state.now_ms - RETENTION_MS
        retained = {rid for rid, seen in self.seen.items() if seen.at_ms >= horizon_ms}
        assert set(self.ledger.state.replies) == retained
        for request_id in retained:
            assert self.ledger.state.replies[request_id] == self.seen[request_id].reply

    @invariant()
    def a_follower_replaying_the_log_has_the_same_state(self) -> None:
        """A follower that started empty and applied every logged event (after
        the wire encoding) has the same state hash; so has a snapshot copy."""
        new_events = self.ledger.log[self.follower_applied :]
        for event in decode_events(encode_events(new_events)):
            apply(self.follower, event)
        self.follower_applied = len(self.ledger.log)
        expected = state_hash(self.ledger.state)
        assert state_hash(self.follower) == expected
        assert state_hash(restore_snapshot(snapshot_bytes(self.ledger.state))) == expected

    def teardown(self) -> None:
        replayed = new_state(self.ledger.state.config)
        for event in self.ledger.log:
            apply(replayed, event)
        assert state_hash(replayed) == state_hash(self.ledger.state)


def payout_of(stake_minor: int, odds: list[int], divisors: list[int]) -> int:
    value = Fraction(stake_minor)
    for price in odds:
        value *= Fraction(price, 100)
    for divisor in divisors:
        value /= divisor
    return floor(value)


LedgerMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=30, deadline=None)
TestLedgerStateful = LedgerMachine.TestCase


def potential_of(stake_minor: int, odds: list[int], each_way: bool) -> int:
    """What a bet returns if every leg wins: the win part, plus the place
    part at a quarter the odds for an each-way bet."""
    potential = payout_of(stake_minor, odds, [])
    if each_way:
        value = Fraction(stake_minor)
        for price in odds:
            value *= 1 + Fraction(price - 100, 100) * Fraction(
                PLACE_TERMS.fraction_numerator, PLACE_TERMS.fraction_denominator
            )
        potential += floor(value)
    return potential
