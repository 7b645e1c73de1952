"""Views: what a read (a query) returns. Snapshots of the state, never stored.

Views are tagged replies like the command replies (same `type` tag field), so
an outcome carrying one travels over the same wire encoding. A read that cannot be
answered (nothing found, a bad cursor) returns `ReadRefusal` rather than a
rejection: a rejection is logged (so a retry hears it again), and a read must
never write to the log.
"""

from __future__ import annotations

import msgspec

from ironbook.core.events import BetStatus, LegOutcome, LimitPeriod, MarketStatus, Reply
from ironbook.core.odds import Ladder, PlaceTerms, Price


class LimitView(msgspec.Struct, frozen=True):
    period: LimitPeriod
    limit_minor: int | None
    pending_limit_minor: int | None = None
    pending_effective_ms: int | None = None
    """A raised limit waits out the cool-off before it applies."""


class AccountView(Reply, frozen=True, tag="account_view"):
    account_id: str
    balance_minor: int
    currency: str
    status: str
    """`active` or `self_excluded`."""
    excluded_until_ms: int
    opened_ms: int
    limits: tuple[LimitView, ...]


class LegView(msgspec.Struct, frozen=True):
    market_id: str
    selection_id: str
    odds: Price
    outcome: LegOutcome
    dead_heat: int


class BetView(Reply, frozen=True, tag="bet_view"):
    bet_id: str
    account_id: str
    stake_minor: int
    legs: tuple[LegView, ...]
    potential_payout_minor: int
    status: BetStatus
    payout_minor: int
    placed_ms: int
    reject_code: str = ""
    """Why a held in-play bet was rejected at release."""
    each_way: bool = False
    cashed_out_minor: int = 0


class BetPage(Reply, frozen=True, tag="bet_page"):
    bets: tuple[BetView, ...]
    next_after: str | None
    """Pass as `after` for the next page; None when there is no more."""


class CashOutQuote(Reply, frozen=True, tag="cash_out_quote"):
    bet_id: str
    quote_id: str
    amount_minor: int
    stake_minor: int
    """The stake (per part) the quote cashes out."""
    expires_ms: int


class SelectionView(msgspec.Struct, frozen=True):
    selection_id: str
    name: str
    odds: Price


class MarketView(Reply, frozen=True, tag="market_view"):
    market_id: str
    event_id: str
    name: str
    status: MarketStatus
    in_play: bool
    bet_delay_s: int
    selections: tuple[SelectionView, ...]
    winners: tuple[str, ...]
    producer: str = ""
    producer_down: bool = False
    """The market's feed producer is down: `status` shows "suspended"."""
    max_liability_minor: int = 0
    """The market's worst case: its largest selection liability."""
    ladder: Ladder = msgspec.field(default_factory=Ladder)
    place_terms: PlaceTerms | None = None
    result_done_bets: int = 0
    result_total_bets: int = 0
    """While a result is applied slice by slice (status `settling`, or a
    windowed void): of the market's bets in this partition, how many the
    slices so far have walked, and how many the result covers."""


class MarketPage(Reply, frozen=True, tag="market_page"):
    markets: tuple[MarketView, ...]
    next_after: str | None


class FeedCursorReply(Reply, frozen=True, tag="feed_cursor"):
    producer: str
    cursor: int
    """Every provider message up to this one is in this partition's ledger."""
    down: bool


class ReadRefusal(Reply, frozen=True, tag="read_refusal"):
    code: str
    """A `RejectionCode` (`unknown_account`, ...) or `unknown_bet` / `invalid_cursor`."""
    message: str


AnyView = (
    AccountView
    | BetView
    | BetPage
    | CashOutQuote
    | MarketView
    | MarketPage
    | FeedCursorReply
    | ReadRefusal
)
