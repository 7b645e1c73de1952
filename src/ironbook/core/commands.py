"""Commands: what a client asks the ledger to do.

Every command carries the request id that makes it idempotent. Commands are
tagged msgspec structs; the tag carries the schema version (`/1`). On the wire
they are MessagePack arrays `[tag, field, ...]` (compact and fast to decode);
a new field may only be added at the end, with a default.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PriceChangePolicy = Literal["none", "better", "any"]


class SelectionSpec(
    msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True
):
    selection_id: str
    name: str
    odds: int


class SelectionPrice(
    msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True
):
    selection_id: str
    odds: int


class BetLeg(msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True):
    market_id: str
    selection_id: str
    odds: int


class Winner(msgspec.Struct, frozen=True, array_like=True, gc=False, forbid_unknown_fields=True):
    """A winning selection; `dead_heat` > 1 divides the stake between that
    many runners tied for the place."""

    selection_id: str
    dead_heat: int = 1


class Command(
    msgspec.Struct,
    frozen=True,
    tag_field="type",
    array_like=True,
    gc=False,
    forbid_unknown_fields=True,
):
    request_id: str


class OpenAccount(Command, frozen=True, tag="open_account/1"):
    account_id: str


class Deposit(Command, frozen=True, tag="deposit/1"):
    account_id: str
    amount_minor: int


class Withdraw(Command, frozen=True, tag="withdraw/1"):
    account_id: str
    amount_minor: int


class AdjustBalance(Command, frozen=True, tag="adjust_balance/1"):
    """An admin correction: positive credits the player from the house."""

    account_id: str
    amount_minor: int
    actor: str
    reason: str


class SetDepositLimits(Command, frozen=True, tag="set_deposit_limits/1"):
    """The whole set of deposit limits; None means no limit for that period."""

    account_id: str
    day_minor: int | None = None
    week_minor: int | None = None
    month_minor: int | None = None


class SelfExclude(Command, frozen=True, tag="self_exclude/1"):
    account_id: str
    days: int


class CreateMarket(Command, frozen=True, tag="create_market/1"):
    market_id: str
    event_id: str
    name: str
    selections: tuple[SelectionSpec, ...]
    in_play: bool = False
    bet_delay_s: int = 0


class UpdatePrices(Command, frozen=True, tag="update_prices/1"):
    market_id: str
    prices: tuple[SelectionPrice, ...]


class SuspendMarket(Command, frozen=True, tag="suspend_market/1"):
    market_id: str


class ResumeMarket(Command, frozen=True, tag="resume_market/1"):
    market_id: str


class CloseMarket(Command, frozen=True, tag="close_market/1"):
    market_id: str


class SettleMarket(Command, frozen=True, tag="settle_market/1"):
    market_id: str
    winners: tuple[Winner, ...]
    actor: str = "system"


class VoidMarket(Command, frozen=True, tag="void_market/1"):
    market_id: str
    actor: str
    reason: str


class ResettleMarket(Command, frozen=True, tag="resettle_market/1"):
    market_id: str
    winners: tuple[Winner, ...]
    actor: str
    reason: str


class PlaceBet(Command, frozen=True, tag="place_bet/1"):
    account_id: str
    stake_minor: int
    legs: tuple[BetLeg, ...]
    price_change: PriceChangePolicy = "none"


AnyCommand = (
    OpenAccount
    | Deposit
    | Withdraw
    | AdjustBalance
    | SetDepositLimits
    | SelfExclude
    | CreateMarket
    | UpdatePrices
    | SuspendMarket
    | ResumeMarket
    | CloseMarket
    | SettleMarket
    | VoidMarket
    | ResettleMarket
    | PlaceBet
)
