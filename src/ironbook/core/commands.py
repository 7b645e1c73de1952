"""Commands: what a client asks the ledger to do.

Every command carries the request id that makes it idempotent. Commands are
tagged msgspec structs; the tag carries the schema version (`/1`). On the wire
they are MessagePack arrays `[tag, field, ...]` (compact and fast to decode);
a new field may only be added at the end, with a default.

Every command also carries the `Principal` that issued it (its last array
item; `core.principal` says what each role may issue). The `actor` fields of
the result commands date from before principals: they still decode, but the
log records the principal's subject.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

from ironbook.core.odds import Ladder, Odds, PlaceTerms

PriceChangePolicy = Literal["none", "better", "any"]

# Bounds checked when a command is decoded from the wire (the leader answers a
# command outside them "bad request"): nothing unbounded reaches the log.
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(max_length=200)]
Actor = Annotated[str, msgspec.Meta(max_length=100)]
Reason = Annotated[str, msgspec.Meta(max_length=500)]
Many = msgspec.Meta(max_length=500)


class SelectionSpec(
    msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True
):
    selection_id: Id
    name: Name
    odds: Odds


class SelectionPrice(
    msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True
):
    selection_id: Id
    odds: Odds


class BetLeg(msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True):
    market_id: Id
    selection_id: Id
    odds: Odds


class Winner(msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True):
    """A selection in the result: it finished at `position` (1 = won), tied
    with `dead_heat` - 1 others there. A dead heat for the win divides the
    win stake by `dead_heat`; for a place, each-way place parts are paid on
    the places the tied runners share (see `core.odds.places_paid`)."""

    selection_id: Id
    dead_heat: int = 1
    position: int = 1


TokenRole = Literal["bettor", "trader", "cashier", "admin", "auditor"]
"""The roles a gateway token may carry: people."""
ServiceRole = Literal["ingest", "ledger", "ops"]
"""The roles of services acting on their own account; never in a token."""
Role = Literal[TokenRole, ServiceRole]
TOKEN_ROLES: tuple[TokenRole, ...] = get_args(TokenRole)
SERVICE_ROLES: tuple[ServiceRole, ...] = get_args(ServiceRole)


class Principal(msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True):
    """An authenticated caller (`core.principal` says what each role may
    issue). `account_id` set: every account the caller's commands name must
    be that one (a bettor's own account)."""

    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    role: Role
    account_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    token_id: Annotated[str, msgspec.Meta(max_length=128)] = ""
    """The token's `jti` ("" for a service identity)."""


LEDGER_PRINCIPAL = Principal(subject="ledger", role="ledger")
"""The replicas' own commands (the next slice of a result, held bets' release)."""


class _Issued(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    principal: Principal | None = None
    """Who issued the command. Keyword-only, so it is the last array item of
    every command type: commands encoded before it decode with None, which
    `decide` refuses."""


class Command(
    _Issued,
    frozen=True,
    tag_field="type",
    array_like=True,
    gc=False,
    forbid_unknown_fields=True,
):
    request_id: RequestId


class OpenAccount(Command, frozen=True, tag="open_account/1"):
    account_id: Id


class Deposit(Command, frozen=True, tag="deposit/1"):
    account_id: Id
    amount_minor: int
    reason: Reason = ""
    """Required (a deposit is made by staff): logged with the actor."""


class Withdraw(Command, frozen=True, tag="withdraw/1"):
    account_id: Id
    amount_minor: int
    reason: Reason = ""
    """Required when staff withdraw for the player; logged with the actor."""


class AdjustBalance(Command, frozen=True, tag="adjust_balance/1"):
    """An admin correction: positive credits the player from the house."""

    account_id: Id
    amount_minor: int
    actor: Actor
    reason: Reason


class SetDepositLimits(Command, frozen=True, tag="set_deposit_limits/1"):
    """The whole set of deposit limits; None means no limit for that period."""

    account_id: Id
    day_minor: int | None = None
    week_minor: int | None = None
    month_minor: int | None = None


class SelfExclude(Command, frozen=True, tag="self_exclude/1"):
    account_id: Id
    days: int


class CreateMarket(Command, frozen=True, tag="create_market/2"):
    market_id: Id
    event_id: Id
    name: Name
    selections: Annotated[tuple[SelectionSpec, ...], Many]
    in_play: bool = False
    bet_delay_s: int = 0
    producer: Annotated[str, msgspec.Meta(max_length=64)] = ""
    """The feed producer that owns the market ("" = traded by hand): while
    that producer is down, the market takes no bets."""
    ladder: Ladder = msgspec.field(default_factory=Ladder)
    """The prices traders may quote on the market, and how it shows them."""
    place_terms: PlaceTerms | None = None
    """Each-way terms; None: the market takes no each-way bets."""
    reason: Reason = ""


class CreateMarketV1(CreateMarket, frozen=True, tag="create_market/1"):
    """The first version: an exchange-ladder market, no each-way terms."""


class UpdatePrices(Command, frozen=True, tag="update_prices/1"):
    market_id: Id
    prices: Annotated[tuple[SelectionPrice, ...], Many]
    reason: Reason = ""


class SuspendMarket(Command, frozen=True, tag="suspend_market/1"):
    market_id: Id
    reason: Reason = ""


class ResumeMarket(Command, frozen=True, tag="resume_market/1"):
    market_id: Id
    reason: Reason = ""


class CloseMarket(Command, frozen=True, tag="close_market/1"):
    market_id: Id
    reason: Reason = ""


class SettleMarket(Command, frozen=True, tag="settle_market/1"):
    market_id: Id
    winners: Annotated[tuple[Winner, ...], Many]
    actor: Actor = "system"
    """Superseded by the principal's subject, which is what the log records."""
    reason: Reason = ""


class VoidMarket(Command, frozen=True, tag="void_market/1"):
    """Void the market, or, with a window, only the bets placed in
    `[placed_from_ms, placed_to_ms)` (the market keeps its status)."""

    market_id: Id
    actor: Actor
    reason: Reason
    placed_from_ms: int | None = None
    placed_to_ms: int | None = None


class ResettleMarket(Command, frozen=True, tag="resettle_market/1"):
    market_id: Id
    winners: Annotated[tuple[Winner, ...], Many]
    actor: Actor
    reason: Reason


class RollbackSettlement(Command, frozen=True, tag="rollback_settlement/1"):
    """Undo a settlement or void: every bet goes back to open (its money
    reversed), the market to closed, ready to be settled again."""

    market_id: Id
    actor: Actor
    reason: Reason


class ContinueResult(Command, frozen=True, tag="continue_result/1"):
    """Result the next slice of the market's result in progress, from
    `cursor`. The leader sends it itself; a stale cursor changes nothing."""

    market_id: Id
    cursor: int


class FeedMarket(
    msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True
):
    """One market's changes in a feed batch; None / empty means unchanged."""

    market_id: Id
    seq: int
    """The provider cursor of the newest feed message that touched this market."""
    event_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    """With `selections` non-empty: create the market if it does not exist."""
    name: Name = ""
    selections: Annotated[tuple[SelectionSpec, ...], Many] = ()
    in_play: bool | None = None
    bet_delay_s: int | None = None
    status: Literal["open", "suspended", "closed"] | None = None
    prices: Annotated[tuple[SelectionPrice, ...], Many] = ()


class FeedBatch(Command, frozen=True, tag="feed_batch/1"):
    """Prices and statuses from a feed producer, exactly once per partition:
    every provider message up to `to_cursor` is covered, and items at or below
    the partition's cursor for the producer are ignored."""

    producer: Id
    to_cursor: int
    markets: Annotated[tuple[FeedMarket, ...], msgspec.Meta(max_length=5000)]


class SetProducerStatus(Command, frozen=True, tag="set_producer_status/1"):
    """A feed producer went down (its markets take no bets) or came back."""

    producer: Id
    down: bool
    reason: Reason = ""


class ReleaseBets(Command, frozen=True, tag="release_bets/1"):
    """Accept or reject the in-play bets whose delay is over (by log time)."""


class ArchiveSettled(Command, frozen=True, tag="archive_settled/1"):
    """Move markets final for longer than the bet retention window, and their
    bets, out of the state (the leader sends it itself; core/archiving.py)."""


class PlaceBet(Command, frozen=True, tag="place_bet/2"):
    account_id: Id
    stake_minor: int
    """Per part: an each-way bet stakes this on the win and on the place."""
    legs: Annotated[tuple[BetLeg, ...], msgspec.Meta(max_length=64)]
    price_change: PriceChangePolicy = "none"
    each_way: bool = False


class PlaceBetV1(PlaceBet, frozen=True, tag="place_bet/1"):
    """The first version: win only."""


class CashOut(Command, frozen=True, tag="cash_out/1"):
    """Accept a cash-out quote: settle `stake_minor` (per part; None = all)
    of the bet now for `amount_minor`, if the quote still stands."""

    account_id: Id
    bet_id: Id
    quote_id: Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
    amount_minor: int
    stake_minor: int | None = None


AnyCommand = (
    OpenAccount
    | Deposit
    | Withdraw
    | AdjustBalance
    | SetDepositLimits
    | SelfExclude
    | CreateMarket
    | CreateMarketV1
    | UpdatePrices
    | SuspendMarket
    | ResumeMarket
    | CloseMarket
    | SettleMarket
    | VoidMarket
    | ResettleMarket
    | PlaceBet
    | PlaceBetV1
    | RollbackSettlement
    | FeedBatch
    | SetProducerStatus
    | ReleaseBets
    | ArchiveSettled
    | CashOut
    | ContinueResult
)
