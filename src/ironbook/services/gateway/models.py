"""The HTTP shapes: request bodies (strict: no unknown fields, no coercion,
bounded numbers and strings) and response bodies, which make the OpenAPI
document at `/openapi.json`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_AMOUNT_MINOR = 10**12
MAX_STAKE_MINOR = 10**12
MAX_ID = 64

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=r"^[!-~]+$")]
"""Printable ASCII without spaces, 1..64 characters."""
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
OddsText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=12, pattern=r"^[0-9]{1,4}(\.[0-9]{1,2})?$"),
]
"""A decimal price like "2.50": 1.01 to 1000.00."""
AmountMinor = Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR)]
LimitMinor = Annotated[int, Field(ge=0, le=MAX_AMOUNT_MINOR)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Requests.


class OpenAccountIn(Strict):
    account_id: Id | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None


class AmountIn(Strict):
    amount_minor: AmountMinor


class LimitsIn(Strict):
    """The whole set of deposit limits; a missing or null period has none."""

    day_minor: LimitMinor | None = None
    week_minor: LimitMinor | None = None
    month_minor: LimitMinor | None = None


class SelfExclusionIn(Strict):
    days: Annotated[int, Field(ge=1, le=36_500)]


class LegIn(Strict):
    market_id: Id
    selection_id: Id
    odds: OddsText


class BetIn(Strict):
    account_id: Id
    stake_minor: Annotated[int, Field(gt=0, le=MAX_STAKE_MINOR)]
    legs: Annotated[list[LegIn], Field(min_length=1, max_length=12)]
    price_change: Literal["none", "better", "any"] = "none"


class SelectionIn(Strict):
    selection_id: Id
    name: Text
    odds: OddsText


class MarketIn(Strict):
    market_id: Id | None = None
    event: Id
    name: Text
    selections: Annotated[list[SelectionIn], Field(min_length=1, max_length=500)]
    in_play: bool = False
    bet_delay_s: Annotated[int, Field(ge=0, le=300)] = 0


class PriceIn(Strict):
    selection_id: Id
    odds: OddsText


class PricesIn(Strict):
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=500)]


class WinnerIn(Strict):
    selection_id: Id
    dead_heat: Annotated[int, Field(ge=1, le=500)] = 1


Winners = Annotated[list[Id | WinnerIn], Field(max_length=500)]
"""Selection ids, or {selection_id, dead_heat} for a dead heat."""


class SettleIn(Strict):
    winners: Winners


class VoidIn(Strict):
    reason: Text


class ResettleIn(Strict):
    winners: Winners
    reason: Text


# Responses.


class AccountOut(BaseModel):
    account_id: str
    balance_minor: int


class TransactionOut(BaseModel):
    account_id: str
    balance_minor: int
    transaction_id: str


class LimitOut(BaseModel):
    period: Literal["day", "week", "month"]
    limit_minor: int | None
    pending_limit_minor: int | None = None
    pending_effective_ms: int | None = None


class AccountDetailOut(BaseModel):
    account_id: str
    balance_minor: int
    currency: str
    status: Literal["active", "self_excluded"]
    excluded_until_ms: int
    opened_ms: int
    limits: list[LimitOut]


class LimitChangeOut(BaseModel):
    period: Literal["day", "week", "month"]
    limit_minor: int | None
    effective_ms: int


class LimitsOut(BaseModel):
    account_id: str
    changes: list[LimitChangeOut]


class ExclusionOut(BaseModel):
    account_id: str
    excluded_until_ms: int


class BetPlacedOut(BaseModel):
    bet_id: str
    status: Literal["open", "won", "lost", "void"]
    odds: str
    potential_payout_minor: int
    balance_minor: int


class LegOut(BaseModel):
    market_id: str
    selection_id: str
    odds: str
    outcome: Literal["pending", "won", "lost", "void"]
    dead_heat: int


class BetOut(BaseModel):
    bet_id: str
    account_id: str
    stake_minor: int
    legs: list[LegOut]
    potential_payout_minor: int
    status: Literal["open", "won", "lost", "void"]
    payout_minor: int
    placed_ms: int


class BetPageOut(BaseModel):
    bets: list[BetOut]
    next_after: str | None


class SelectionOut(BaseModel):
    selection_id: str
    name: str
    odds: str


class MarketOut(BaseModel):
    market_id: str
    event: str
    name: str
    status: Literal["open", "suspended", "closed", "settled", "voided"]
    in_play: bool
    bet_delay_s: int
    selections: list[SelectionOut]
    winners: list[str]


class MarketPageOut(BaseModel):
    markets: list[MarketOut]
    next_after: str | None


class MarketStatusOut(BaseModel):
    market_id: str
    status: Literal["open", "suspended", "closed", "settled", "voided"]


class SettlementOut(BaseModel):
    market_id: str
    status: Literal["open", "suspended", "closed", "settled", "voided"]
    bets_affected: int
    paid_minor: int


class HistoryEntryOut(BaseModel):
    entry_id: int
    at_ms: int
    kind: Literal["deposit", "withdrawal", "adjustment", "bet", "settlement"]
    amount_minor: int
    balance_minor: int
    reference: str


class HistoryPageOut(BaseModel):
    entries: list[HistoryEntryOut]
    next_after: int | None
    as_of_seq: int


class ProblemOut(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, object]] | None = None
