"""Events: the facts the ledger log records, and the replies clients were given.

One accepted command becomes one event (a market result with many bets is
decided and logged in slices, one log entry each). Every event carries its
postings — the double-entry lines, which sum to zero — and the reply the
client received, so a retried request id returns exactly the first answer.
A rejection is logged too, as a `CommandRejected`, so a retry after a
failover returns the same refusal.

Every event records its `actor`, the subject of the principal that issued
the command (on a `MarketResulted`, the principal's subject too), and the
events of staff money movements and market actions their `reason`; entries
logged before principals decode with "" for both.

Encoded as MessagePack arrays `[tag, field, ...]`: a new field may only be
added at the end with a default; anything else is a new tag version.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ironbook.core.commands import (
    BetLeg,
    FeedMarket,
    PriceChangePolicy,
    SelectionPrice,
    SelectionSpec,
    Winner,
)
from ironbook.core.odds import Ladder, Odds, PlaceTerms, Price

Posting = tuple[str, int]
"""(account id, signed amount in minor units): positive credits the account."""

MarketStatus = Literal["open", "suspended", "closed", "settling", "settled", "voided"]
"""`settling`: a result is being applied slice by slice; no bets, no feed changes."""
BetStatus = Literal["open", "won", "lost", "void", "pending", "rejected", "cashed_out"]
"""`pending`: held for an in-play bet delay; `rejected`: refused when released;
`cashed_out`: settled early for a cash-out, out of any later result."""
LegOutcome = Literal["pending", "won", "lost", "void"]
ResultKind = Literal["settle", "void", "resettle", "rollback"]
LimitPeriod = Literal["day", "week", "month"]


# Replies: what the client is told. Tagged so a stored reply decodes to its type.


class Reply(msgspec.Struct, frozen=True, tag_field="type", array_like=True, gc=False):
    pass


class AccountReply(Reply, frozen=True, tag="account"):
    account_id: str
    balance_minor: int


class TransactionReply(Reply, frozen=True, tag="transaction"):
    account_id: str
    balance_minor: int
    transaction_id: str


class LimitChange(msgspec.Struct, frozen=True, array_like=True, gc=False):
    period: LimitPeriod
    limit_minor: int | None
    effective_ms: int


class LimitsReply(Reply, frozen=True, tag="limits"):
    account_id: str
    changes: tuple[LimitChange, ...]


class ExclusionReply(Reply, frozen=True, tag="exclusion"):
    account_id: str
    excluded_until_ms: int


class MarketReply(Reply, frozen=True, tag="market"):
    market_id: str
    status: MarketStatus


class SettlementReply(Reply, frozen=True, tag="settlement"):
    market_id: str
    status: MarketStatus
    bets_affected: int
    paid_minor: int


class BetReply(Reply, frozen=True, tag="bet"):
    bet_id: str
    status: BetStatus
    odds: Odds
    """The bet's exact price (an accumulator's legs combined)."""
    potential_payout_minor: int
    balance_minor: int


class FeedReply(Reply, frozen=True, tag="feed"):
    producer: str
    cursor: int
    """The partition's cursor for the producer after the batch."""
    applied: int
    skipped: int
    """Items ignored as invalid (unknown market, off-ladder price, ...)."""


class ProducerReply(Reply, frozen=True, tag="producer"):
    producer: str
    down: bool


class ReleaseReply(Reply, frozen=True, tag="release"):
    accepted: int
    rejected: int


class ArchiveReply(Reply, frozen=True, tag="archive"):
    markets: int
    bets: int


class CashOutReply(Reply, frozen=True, tag="cash_out"):
    bet_id: str
    status: BetStatus
    amount_minor: int
    stake_minor: int
    """The stake (per part) the bet still runs on: 0 after a full cash-out."""
    balance_minor: int


class Refusal(Reply, frozen=True, tag="refusal"):
    code: str
    message: str


AnyReply = (
    AccountReply
    | TransactionReply
    | LimitsReply
    | ExclusionReply
    | MarketReply
    | SettlementReply
    | BetReply
    | FeedReply
    | ProducerReply
    | ReleaseReply
    | ArchiveReply
    | CashOutReply
    | Refusal
)


# Views the log keeps: the final state of an archived bet or market (a read
# of one still in the state builds the same view; see core/views.py).


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


# Events.


class Event(msgspec.Struct, frozen=True, tag_field="type", array_like=True, gc=False):
    request_id: str
    at_ms: int
    postings: tuple[Posting, ...] = ()


class AccountOpened(Event, frozen=True, tag="account_opened/1", kw_only=True):
    account_id: str
    reply: AccountReply
    actor: str = ""


class Deposited(Event, frozen=True, tag="deposited/1", kw_only=True):
    account_id: str
    amount_minor: int
    transaction_id: str
    reply: TransactionReply
    actor: str = ""
    reason: str = ""


class Withdrawn(Event, frozen=True, tag="withdrawn/1", kw_only=True):
    account_id: str
    amount_minor: int
    transaction_id: str
    reply: TransactionReply
    actor: str = ""
    reason: str = ""


class BalanceAdjusted(Event, frozen=True, tag="balance_adjusted/1", kw_only=True):
    account_id: str
    amount_minor: int
    transaction_id: str
    actor: str
    reason: str
    reply: TransactionReply


class DepositLimitsSet(Event, frozen=True, tag="deposit_limits_set/1", kw_only=True):
    account_id: str
    changes: tuple[LimitChange, ...]
    reply: LimitsReply
    actor: str = ""


class SelfExcluded(Event, frozen=True, tag="self_excluded/1", kw_only=True):
    account_id: str
    until_ms: int
    reply: ExclusionReply
    actor: str = ""


class MarketCreated(Event, frozen=True, tag="market_created/2", kw_only=True):
    market_id: str
    event_id: str
    name: str
    selections: tuple[SelectionSpec, ...]
    in_play: bool
    bet_delay_s: int
    reply: MarketReply
    producer: str = ""
    ladder: Ladder = msgspec.field(default_factory=Ladder)
    place_terms: PlaceTerms | None = None
    actor: str = ""
    reason: str = ""


class MarketCreatedV1(MarketCreated, frozen=True, tag="market_created/1", kw_only=True):
    """As logged before ladders and each-way: an exchange-ladder market."""


class PricesUpdated(Event, frozen=True, tag="prices_updated/1", kw_only=True):
    market_id: str
    prices: tuple[SelectionPrice, ...]
    reply: MarketReply
    actor: str = ""
    reason: str = ""


class MarketStatusChanged(Event, frozen=True, tag="market_status_changed/1", kw_only=True):
    market_id: str
    status: MarketStatus
    reply: MarketReply
    actor: str = ""
    reason: str = ""


class BetPlaced(Event, frozen=True, tag="bet_placed/2", kw_only=True):
    bet_id: str
    account_id: str
    stake_minor: int
    legs: tuple[BetLeg, ...]
    """The legs at the odds actually accepted."""
    potential_payout_minor: int
    reply: BetReply
    release_ms: int = 0
    """0: the bet is live. Else it is held (in-play delay) until log time
    reaches `release_ms`, then accepted or rejected by a `BetsReleased`."""
    price_change: PriceChangePolicy = "none"
    """The bet's policy, judged again when a held bet is released."""
    each_way: bool = False
    """`stake_minor` is staked twice: on the win and on the place."""
    place_terms: tuple[PlaceTerms, ...] = ()
    """Each-way: every leg's place terms, fixed at placement."""
    actor: str = ""


class BetPlacedV1(BetPlaced, frozen=True, tag="bet_placed/1", kw_only=True):
    """As logged before each-way bets."""


class BetOutcome(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A bet's status and total payout after a market result."""

    bet_id: str
    status: BetStatus
    payout_minor: int


class MarketResulted(Event, frozen=True, tag="market_resulted/1", kw_only=True):
    """One slice of a settlement, void, resettlement or rollback of one
    market: the new status of the bets with a leg on it among the market's
    bets `[slice_from, slice_to)` of `slice_total`, and the money those bets
    move. The first slice carries the client's reply; the market shows
    `settling` until the slice with `slice_to == slice_total`."""

    market_id: str
    kind: ResultKind
    status: MarketStatus
    winners: tuple[Winner, ...]
    bets: tuple[BetOutcome, ...]
    written_off: tuple[Posting, ...]
    """Reversal shortfalls the house absorbed (a player had already spent
    winnings that a resettlement took back): (account, amount)."""
    actor: str
    reason: str
    reply: SettlementReply | None
    placed_from_ms: int | None = None
    placed_to_ms: int | None = None
    """A windowed void: only bets placed in [from, to) were voided."""
    slice_from: int = 0
    slice_to: int = 0
    slice_total: int = 0
    """Indexes into the market's bet ids; all 0 for a result logged whole."""
    owed: tuple[Posting, ...] = ()
    """(account, amount) this result now takes back from the player beyond
    the balance, for each account whose amount changed in this slice (0:
    settled). What is still owed after the last slice is `written_off`."""


class FeedApplied(Event, frozen=True, tag="feed_applied/1", kw_only=True):
    """A feed batch's valid, new items, applied in order; then the producer's
    cursor moves to `to_cursor`. No stored reply: the cursor is what makes a
    replayed batch harmless, and feeds send thousands of these a second."""

    producer: str
    to_cursor: int
    markets: tuple[FeedMarket, ...]
    skipped: int
    reply: None = None
    actor: str = ""
    reason: str = ""


class ProducerStatusChanged(Event, frozen=True, tag="producer_status_changed/1", kw_only=True):
    producer: str
    down: bool
    reply: ProducerReply
    actor: str = ""
    reason: str = ""


class BetsReleased(Event, frozen=True, tag="bets_released/1", kw_only=True):
    """Held bets whose delay is over: accepted at their placed odds, or
    rejected (stake refunded by the postings) with a code."""

    accepted: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
    """(bet id, rejection code)."""
    reply: ReleaseReply | None = None
    """Stored, so a resent `ReleaseBets` is a no-op: at most one per held bet,
    which stores its own reply anyway."""
    actor: str = ""


class BetCashedOut(Event, frozen=True, tag="bet_cashed_out/1", kw_only=True):
    """`stake_minor` (per part) of the bet settled early for `amount_minor`;
    the bet runs on with `remaining_stake_minor` and the potential payout of
    that stake (a full cash-out leaves 0 and the bet `cashed_out`)."""

    bet_id: str
    account_id: str
    stake_minor: int
    amount_minor: int
    remaining_stake_minor: int
    potential_payout_minor: int
    reply: CashOutReply
    actor: str = ""


class SettledArchived(Event, frozen=True, tag="settled_archived/1", kw_only=True):
    """Markets final for longer than the bet retention window, and their
    bets, leave the state; the log keeps their final views (`markets`,
    `bets`), which the read model serves from then on (core/archiving.py).

    `consumed` entries leave the head of the archive queue: the archived
    markets, stale entries, and the `deferred` ones, queued again as (due
    ms, market id) for when what holds them back may be over. A market with
    more bets than one event holds is archived over several: `continued`
    names it while bets of it remain (it stays at the queue's head), and its
    first `walked` bet ids are done."""

    consumed: int
    markets: tuple[MarketView, ...]
    bets: tuple[BetView, ...]
    deferred: tuple[tuple[int, str], ...] = ()
    continued: str = ""
    walked: int = 0
    reply: None = None
    """No stored reply: a resent `ArchiveSettled` archives what is due by
    then, which is as harmless as a new one."""
    actor: str = ""


class CommandRejected(Event, frozen=True, tag="command_rejected/1", kw_only=True):
    reply: Refusal
    actor: str = ""


AnyEvent = (
    AccountOpened
    | Deposited
    | Withdrawn
    | BalanceAdjusted
    | DepositLimitsSet
    | SelfExcluded
    | MarketCreated
    | MarketCreatedV1
    | PricesUpdated
    | MarketStatusChanged
    | BetPlaced
    | BetPlacedV1
    | MarketResulted
    | CommandRejected
    | FeedApplied
    | ProducerStatusChanged
    | BetsReleased
    | BetCashedOut
    | SettledArchived
)
