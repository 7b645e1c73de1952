"""Views: what a read (a query) returns. Snapshots of the state, never stored
(but for the final views of archived bets and markets, which the log keeps:
those are defined with the events).

Views are tagged replies like the command replies (same `type` tag field), so
an outcome carrying one travels over the same wire encoding. A read that cannot be
answered (nothing found, a bad cursor) returns `ReadRefusal` rather than a
rejection: a rejection is logged (so a retry hears it again), and a read must
never write to the log.
"""

from __future__ import annotations

import msgspec

from ironbook.core.events import (
    BetView,
    LegView,
    LimitPeriod,
    MarketView,
    Reply,
    SelectionView,
)


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

__all__ = [
    "AccountView",
    "AnyView",
    "BetPage",
    "BetView",
    "CashOutQuote",
    "FeedCursorReply",
    "LegView",
    "LimitView",
    "MarketPage",
    "MarketView",
    "ReadRefusal",
    "SelectionView",
]
