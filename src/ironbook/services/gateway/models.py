"""The HTTP shapes: request bodies (strict: no unknown fields, no coercion,
bounded numbers and strings) and response bodies, which make the OpenAPI
document at `/openapi.json`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ironbook.core.events import BetStatus

MAX_AMOUNT_MINOR = 10**12
MAX_STAKE_MINOR = 10**12
MAX_ID = 64
MAX_LEGS = 12
_ID_PATTERN = r"^[!-~]+$"
_ODDS_PATTERN = (
    r"^([0-9]{1,4}(\.[0-9]{1,2})?|[0-9]{1,7}/[0-9]{1,7}|[Ee][Vv][Ss]|[Ee]vens|[+-][0-9]{3,6})$"
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=_ID_PATTERN)]
"""Printable ASCII without spaces, 1..64 characters."""
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
OddsText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=12, pattern=_ODDS_PATTERN),
]
"""A price in any notation, kept exact: decimal "2.50", fractional "13/8" or
"evs", American "+150" / "-110"; 1/100 (1.01) to 1000/1."""
# The same for msgspec, whose patterns are Python `re.search`: `\Z`, since
# `$` would also match before a final newline (pydantic's `$` does not).
WireId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_ID, pattern=_ID_PATTERN[:-1] + r"\Z")
]
WireOdds = Annotated[
    str, msgspec.Meta(min_length=1, max_length=12, pattern=_ODDS_PATTERN[:-1] + r"\Z")
]
EpochMs = Annotated[int, Field(ge=0, le=2**63 - 1)]
AmountMinor = Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR)]
LimitMinor = Annotated[int, Field(ge=0, le=MAX_AMOUNT_MINOR)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Requests.


class OpenAccountIn(Strict):
    account_id: Id | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None


class DepositIn(Strict):
    amount_minor: AmountMinor
    reason: Text
    """Why staff move the money: the ledger keeps it with who did it."""


class WithdrawalIn(Strict):
    amount_minor: AmountMinor
    reason: Text | None = None
    """Required when staff withdraw for the player (not for the bettor's own)."""


class ReasonIn(Strict):
    reason: Text
    """Why the market changes: the ledger keeps it with who did it."""


class LimitsIn(Strict):
    """The whole set of deposit limits; a missing or null period has none."""

    day_minor: LimitMinor | None = None
    week_minor: LimitMinor | None = None
    month_minor: LimitMinor | None = None


class SelfExclusionIn(Strict):
    days: Annotated[int, Field(ge=1, le=36_500)]


class BetLegIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    market_id: WireId
    selection_id: WireId
    odds: WireOdds


class BetIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/bets`: the one model of a bet request. The edge's fast path
    and the documented route both decode it with `decode_bet`, and the
    OpenAPI document shows its JSON Schema, so a field added here is added
    everywhere."""

    account_id: WireId
    stake_minor: Annotated[int, msgspec.Meta(gt=0, le=MAX_STAKE_MINOR)]
    legs: Annotated[list[BetLegIn], msgspec.Meta(min_length=1, max_length=MAX_LEGS)]
    price_change: Literal["none", "better", "any"] = "none"
    each_way: bool = False
    """`stake_minor` on the win and again on the place, at each market's place terms."""


decode_bet = msgspec.json.Decoder(BetIn).decode
"""Raises `msgspec.DecodeError` (not JSON) or `msgspec.ValidationError`."""

_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def body_errors(err: msgspec.MsgspecError) -> list[dict[str, object]]:
    """A msgspec refusal as the error list of a validation problem: where in
    the body (`["body", "legs", 0, "odds"]`), what, and whether the body was
    not JSON at all (`json_invalid`)."""
    if isinstance(err, msgspec.DecodeError) and not isinstance(err, msgspec.ValidationError):
        return [{"loc": ["body"], "msg": str(err), "type": "json_invalid"}]
    message, _, path = str(err).partition(" - at `")
    loc: list[object] = ["body"]
    for name, index in _PATH_PART.findall(path.rstrip("`")):
        loc.append(name if name else int(index))
    named = _NAMED_FIELD.search(message)
    if named:
        loc.append(named[1])
    return [{"loc": loc, "msg": message, "type": "value_error"}]


def openapi_components(*models: type[msgspec.Struct]) -> dict[str, object]:
    """JSON Schemas of msgspec request bodies, for the OpenAPI document's
    `components.schemas`. Their patterns end in `\\Z` (see `WireId`); JSON
    Schema's `$` already means the end of the text."""
    _, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    return {name: _end_anchored(schema) for name, schema in components.items()}


def _end_anchored(node: object) -> object:
    if isinstance(node, dict):
        return {
            key: value[:-2] + "$"
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z")
            else _end_anchored(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_end_anchored(item) for item in node]
    return node


class WireBetPlaced(msgspec.Struct, frozen=True):
    """`BetPlacedOut`, encoded by msgspec on the hot path."""

    bet_id: str
    status: BetStatus
    odds: str
    potential_payout_minor: int
    balance_minor: int


class SelectionIn(Strict):
    selection_id: Id
    name: Text
    odds: OddsText


class PlaceTermsIn(Strict):
    """Each-way terms: the place part pays `fraction` of the odds ("1/4",
    "1/5") if the runner finishes in the first `places`."""

    fraction: Annotated[str, StringConstraints(pattern=r"^(1/[1-9]|1/10|1/1)$")]
    places: Annotated[int, Field(ge=1, le=10)]


class LadderIn(Strict):
    """The prices traders may quote: `fractional` (the UK bookmaker ladder),
    `exchange` (the Betfair ladder) or `decimal` (any decimal price on
    `tick_hundredths`); `display` is how the market shows its prices."""

    kind: Literal["fractional", "exchange", "decimal"] = "exchange"
    display: Literal["fractional", "decimal", "american"] = "decimal"
    tick_hundredths: Annotated[int, Field(ge=1, le=100)] = 1


class MarketIn(Strict):
    market_id: Id | None = None
    event: Id
    name: Text
    selections: Annotated[list[SelectionIn], Field(min_length=1, max_length=500)]
    in_play: bool = False
    bet_delay_s: Annotated[int, Field(ge=0, le=300)] = 0
    """In-play bets are held this long, then accepted or rejected at the prices
    of that moment (the bet reads `pending` meanwhile)."""
    producer: Id | None = None
    """The feed producer that owns the market: while it is down the market
    takes no bets. None: traded by hand."""
    ladder: LadderIn = LadderIn()
    place_terms: PlaceTermsIn | None = None
    """Each-way terms; None: no each-way bets on the market."""
    reason: Text


class PriceIn(Strict):
    selection_id: Id
    odds: OddsText


class PricesIn(Strict):
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=500)]
    reason: Text


class WinnerIn(Strict):
    selection_id: Id
    dead_heat: Annotated[int, Field(ge=1, le=500)] = 1
    """How many runners tied at `position`."""
    position: Annotated[int, Field(ge=1, le=500)] = 1
    """1 wins; 2, 3, ... are places (for each-way bets)."""


Winners = Annotated[list[Id | WinnerIn], Field(max_length=500)]
"""Selection ids (winners), or {selection_id, dead_heat, position} for dead
heats and placed runners."""


class SettleIn(Strict):
    winners: Winners
    reason: Text


class VoidIn(Strict):
    """Void the whole market, or with a window only the bets placed in
    `[placed_from_ms, placed_to_ms)` (ledger time, ms since the epoch; a
    missing end is open). A window leaves the market's status as it is."""

    reason: Text
    placed_from_ms: EpochMs | None = None
    placed_to_ms: EpochMs | None = None


class RollbackIn(Strict):
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
    status: BetStatus
    """`open` when accepted; `pending` when held for an in-play market's bet
    delay (read it again with `GET /v1/bets/{bet_id}`: `open` or `rejected`)."""
    odds: str
    potential_payout_minor: int
    balance_minor: int


class LegOut(BaseModel):
    market_id: str
    selection_id: str
    odds: str
    """Decimal, to two places; `price` is exact."""
    price: str
    """The exact price the leg was struck at, as a fraction of profit ("13/8")."""
    outcome: Literal["pending", "won", "lost", "void"]
    dead_heat: int


class BetOut(BaseModel):
    bet_id: str
    account_id: str
    stake_minor: int
    legs: list[LegOut]
    potential_payout_minor: int
    status: BetStatus
    payout_minor: int
    placed_ms: int
    reject_code: str | None = None
    """Why a `pending` in-play bet was `rejected` when its delay ended."""
    each_way: bool = False
    cashed_out_minor: int = 0
    """Paid by cash-outs so far (`stake_minor` is what still runs)."""


class BetPageOut(BaseModel):
    bets: list[BetOut]
    next_after: str | None


class SelectionOut(BaseModel):
    selection_id: str
    name: str
    odds: str
    """In the market's display notation ("100/30", "4.33", "+333")."""
    price: str
    """Exact, as a fraction of profit ("10/3")."""


class PlaceTermsOut(BaseModel):
    fraction: str
    places: int


class LadderOut(BaseModel):
    kind: Literal["fractional", "exchange", "decimal"]
    display: Literal["fractional", "decimal", "american"]
    tick_hundredths: int


class MarketOut(BaseModel):
    market_id: str
    event: str
    name: str
    status: Literal["open", "suspended", "closed", "settling", "settled", "voided"]
    in_play: bool
    bet_delay_s: int
    selections: list[SelectionOut]
    winners: list[str]
    producer: str | None
    """The feed producer that owns the market; None if traded by hand."""
    producer_down: bool
    """The producer is down: the market shows `suspended` and takes no bets
    until it is back."""
    ladder: LadderOut
    place_terms: PlaceTermsOut | None = None


class PartitionProgressOut(BaseModel):
    partition: int
    status: Literal["open", "suspended", "closed", "settling", "settled", "voided"]
    done_bets: int
    """Of the market's bets in this partition, how many its result in
    progress has walked (0 with no result in progress)."""
    total_bets: int
    """How many bets the result in progress covers in this partition."""


class MarketProgressOut(BaseModel):
    market_id: str
    partitions: list[PartitionProgressOut]
    """Every partition's view: each settles its own bets, in parallel."""


class MarketPageOut(BaseModel):
    markets: list[MarketOut]
    next_after: str | None


class MarketStatusOut(BaseModel):
    market_id: str
    status: Literal["open", "suspended", "closed", "settling", "settled", "voided"]


class SettlementOut(BaseModel):
    market_id: str
    status: Literal["open", "suspended", "closed", "settling", "settled", "voided"]
    bets_affected: int
    paid_minor: int


class CashOutIn(Strict):
    quote_id: Annotated[str, StringConstraints(min_length=1, max_length=160)]
    amount_minor: Annotated[int, Field(ge=0, le=MAX_AMOUNT_MINOR)]
    stake_fraction: Annotated[str, StringConstraints(pattern=r"^(1|0\.[0-9]{1,4})$")] | None = None
    """The part of the stake to cash out, as quoted ("0.5"); None: all of it."""


class CashOutQuoteOut(BaseModel):
    bet_id: str
    quote_id: str
    amount_minor: int
    stake_minor: int
    """The stake (per part) the quote cashes out."""
    expires_at: int
    """Ledger time (ms since the epoch) after which the quote no longer stands."""


class CashOutOut(BaseModel):
    bet_id: str
    status: BetStatus
    amount_minor: int
    stake_minor: int
    """The stake (per part) still running: 0 after a full cash-out."""
    balance_minor: int


class HistoryEntryOut(BaseModel):
    entry_id: int
    at_ms: int
    kind: Literal[
        "deposit", "withdrawal", "adjustment", "bet", "settlement", "bet_refund", "cash_out"
    ]
    amount_minor: int
    balance_minor: int
    reference: str


class HistoryPageOut(BaseModel):
    entries: list[HistoryEntryOut]
    next_after: int | None
    as_of_seq: int


class SignificantEventOut(BaseModel):
    seq: int
    """Its position in the significant-event log (leaf `seq` of the `events` tree)."""
    kind: str
    actor: str
    reason: str
    target: str
    detail: str
    at_ms: int
    source: str


class SignificantEventPageOut(BaseModel):
    events: list[SignificantEventOut]
    next_after: int | None
    """Pass as `after` for the next page; None when the log was read to its end."""


class ReceiptOut(BaseModel):
    """A bet's receipt: its log entry (the whole batch it was logged in), the
    entry's leaf hash, the RFC 9162 inclusion proof and the signed checkpoint
    that covers it. `ironbook audit verify-receipt` checks this body offline."""

    partition: int
    seq: int
    payload_b64: str
    leaf_hash: str
    inclusion_proof: list[str]
    checkpoint: dict[str, object]


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


class TokenRevokedOut(BaseModel):
    jti: str
    revoked_at_ms: int
