"""What `decide` returns: an acceptance with its events, or a rejection value."""

from __future__ import annotations

import msgspec

from ironbook.core.events import AnyEvent, AnyReply, Refusal
from ironbook.core.views import AnyView


class Accepted(msgspec.Struct, frozen=True):
    events: tuple[AnyEvent, ...]
    result: AnyReply | AnyView
    """The reply for the client (never a `Refusal`); a query's is a view."""


class Rejected(msgspec.Struct, frozen=True):
    code: str
    message: str
    events: tuple[AnyEvent, ...] = ()
    """On first sight of a request id: the `CommandRejected` to log, so a
    retry gets the same refusal. Empty when replaying a stored refusal."""

    @property
    def refusal(self) -> Refusal:
        return Refusal(code=self.code, message=self.message)


Outcome = Accepted | Rejected


class RejectionCode:
    """Stable, machine-readable rejection codes (part of the public API)."""

    INVALID_ACCOUNT_ID = "invalid_account_id"
    ACCOUNT_EXISTS = "account_exists"
    UNKNOWN_ACCOUNT = "unknown_account"
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SELF_EXCLUDED = "self_excluded"
    DEPOSIT_LIMIT_EXCEEDED = "deposit_limit_exceeded"
    INVALID_LIMIT = "invalid_limit"
    INVALID_DAYS = "invalid_days"
    MISSING_REASON = "missing_reason"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    INVALID_MARKET = "invalid_market"
    MARKET_EXISTS = "market_exists"
    UNKNOWN_MARKET = "unknown_market"
    UNKNOWN_SELECTION = "unknown_selection"
    INVALID_ODDS = "invalid_odds"
    OFF_LADDER = "off_ladder"
    NO_EACH_WAY = "no_each_way"
    UNKNOWN_BET = "unknown_bet"
    CASH_OUT_UNAVAILABLE = "cash_out_unavailable"
    INVALID_QUOTE = "invalid_quote"
    QUOTE_EXPIRED = "quote_expired"
    QUOTE_CHANGED = "quote_changed"
    INVALID_STATUS_CHANGE = "invalid_status_change"
    MARKET_SUSPENDED = "market_suspended"
    MARKET_CLOSED = "market_closed"
    INVALID_RESULT = "invalid_result"
    RESETTLE_WINDOW_CLOSED = "resettle_window_closed"
    NO_LEGS = "no_legs"
    TOO_MANY_LEGS = "too_many_legs"
    DUPLICATE_SELECTION = "duplicate_selection"
    RELATED_LEGS = "related_legs"
    STAKE_TOO_LOW = "stake_too_low"
    STAKE_TOO_HIGH = "stake_too_high"
    PRICE_CHANGED = "price_changed"
    LIABILITY_EXCEEDED = "liability_exceeded"
    INVALID_PRODUCER = "invalid_producer"
    INVALID_FEED = "invalid_feed"
    INVALID_WINDOW = "invalid_window"
