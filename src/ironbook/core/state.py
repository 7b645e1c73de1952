"""The ledger state one partition's log folds into.

The state is a tree of msgspec structs so that a snapshot is one encode call.
None of them is tracked by Python's cycle collector (`gc=False`: they hold no
reference cycles), so a state of millions of objects adds nothing to the
collector's pauses.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ironbook.core.commands import Winner
from ironbook.core.events import AnyReply, BetStatus, LegOutcome, MarketStatus, ResultKind
from ironbook.core.odds import Ladder, PlaceTerms, Price

HOUSE = "sys:house"
STAKES_HELD = "sys:stakes_held"
CASHIER = "sys:cashier"
SYSTEM_ACCOUNTS = (HOUSE, STAKES_HELD, CASHIER)
SYSTEM_PREFIX = "sys:"

DAY_MS = 86_400_000
LIMIT_WINDOWS_MS: dict[str, int] = {"day": DAY_MS, "week": 7 * DAY_MS, "month": 30 * DAY_MS}


class LedgerConfig(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Rules of one ledger. Part of the state, so replay sees the same rules."""

    partition: int = 0
    currency: str = "GBP"
    min_stake_minor: int = 10
    max_stake_minor: int = 10_000_000
    max_liability_minor: int = 100_000_000
    """Per selection, per partition: the most the house may lose if it wins."""
    max_legs: int = 12
    max_selections: int = 500
    max_amount_minor: int = 10**12
    """Upper bound on any single deposit, withdrawal or adjustment."""
    max_id_length: int = 64
    idempotency_retention_ms: int = DAY_MS
    limit_increase_delay_ms: int = DAY_MS
    max_self_exclusion_days: int = 36_500
    result_slice_bets: int = 1_000
    """A market result walks at most this many of the market's bets per log
    entry (a slice); a bigger market is resulted in several slices."""
    max_market_liability_minor: int = 500_000_000
    """Per market, per partition: the most the house may lose on it, taken as
    its worst selection's liability (exactly one selection wins)."""
    cash_out_margin_bp: int = 500
    """The book's margin on a cash-out, in basis points of its fair value."""
    cash_out_quote_ttl_ms: int = 10_000
    """How long a cash-out quote stands."""
    result_slice_bytes: int = 64 * 1024
    """A slice also ends once its bet outcomes and postings reach about this
    many encoded bytes, so a slice always fits one log entry."""
    resettle_window_ms: int = 7 * DAY_MS
    """How long after its latest result a market may be resulted again
    (resettled, rolled back, voided); after it, such a command is refused."""
    bet_retention_ms: int = 14 * DAY_MS
    """How long after its latest result a market stays in the state, with its
    bets; then it is archived (core/archiving.py). Longer than
    `resettle_window_ms`, so no result ever touches an archived market."""

    def __post_init__(self) -> None:
        if self.bet_retention_ms <= self.resettle_window_ms:
            raise ValueError(
                f"bet retention ({self.bet_retention_ms} ms) must be longer than the "
                f"resettlement window ({self.resettle_window_ms} ms): a market may be "
                "resulted again only while its bets are still in the state"
            )


class PendingLimit(msgspec.Struct, array_like=True, gc=False):
    limit_minor: int | None
    effective_ms: int


class DepositLimit(msgspec.Struct, array_like=True, gc=False):
    limit_minor: int | None = None
    pending: PendingLimit | None = None

    def effective(self, now_ms: int) -> int | None:
        if self.pending is not None and now_ms >= self.pending.effective_ms:
            return self.pending.limit_minor
        return self.limit_minor


class Account(msgspec.Struct, array_like=True, gc=False):
    account_id: str
    kind: Literal["player", "system"]
    balance_minor: int = 0
    opened_ms: int = 0
    excluded_until_ms: int = 0
    limits: dict[str, DepositLimit] = msgspec.field(default_factory=dict)
    deposits: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """(at_ms, amount_minor) of deposits still inside the longest limit window."""


class Selection(msgspec.Struct, array_like=True, gc=False):
    selection_id: str
    name: str
    odds: Price
    liability_minor: int = 0
    """What the house loses if this selection wins, over open bets."""


class Market(msgspec.Struct, array_like=True, gc=False):
    market_id: str
    event_id: str
    name: str
    status: MarketStatus
    selections: dict[str, Selection]
    in_play: bool = False
    bet_delay_s: int = 0
    bet_ids: list[str] = msgspec.field(default_factory=list)
    winners: dict[str, int] = msgspec.field(default_factory=dict)
    """selection id -> dead-heat divisor, for the latest result."""
    producer: str = ""
    """The feed producer that owns the market; "" = traded by hand."""
    max_liability_minor: int = 0
    """The largest selection liability: raised as bets are placed, recomputed
    when bets leave (settle, void, rollback, rejection at release)."""
    ladder: Ladder = msgspec.field(default_factory=Ladder)
    place_terms: PlaceTerms | None = None
    """Each-way terms for bets placed from now on (a bet keeps its own)."""
    placed: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    """selection id -> (position, runners tied there) of the runners placed
    below first in the latest result (the winners are in `winners`)."""
    final_ms: int | None = None
    """Log time of the market's latest final result (settled or voided); None
    while it has none (or it was rolled back since)."""


class PlacePart(msgspec.Struct, array_like=True, gc=False):
    """An each-way leg's place part: its terms, fixed at placement, and its
    result. A dead heat on it: of `tied` runners, the places they share
    (`places_paid`) pay."""

    terms: PlaceTerms
    outcome: LegOutcome = "pending"
    places_paid: int = 1
    tied: int = 1


class PlacedLeg(msgspec.Struct, array_like=True, gc=False):
    market_id: str
    selection_id: str
    odds: Price
    outcome: LegOutcome = "pending"
    dead_heat: int = 1
    cancelled: bool = False
    """Voided by a windowed cancel: stays void under any later result."""
    place: PlacePart | None = None
    """Each-way bets only."""


class Bet(msgspec.Struct, array_like=True, gc=False):
    bet_id: str
    account_id: str
    stake_minor: int
    legs: tuple[PlacedLeg, ...]
    potential_payout_minor: int
    placed_ms: int
    request_id: str
    status: BetStatus = "open"
    payout_minor: int = 0
    price_change: str = "none"
    """The bet's price-change policy, judged again when a held bet is released."""
    reject_code: str = ""
    """Why a held bet was rejected at release."""
    each_way: bool = False
    """`stake_minor` is per part: the bet staked it on the win and the place."""
    cashed_out_minor: int = 0
    """Paid so far by cash-outs (the whole bet's, or parts of its stake)."""

    @property
    def staked_minor(self) -> int:
        """The money the bet holds: its stake, twice if each-way."""
        return 2 * self.stake_minor if self.each_way else self.stake_minor

    @property
    def liability_minor(self) -> int:
        return self.potential_payout_minor - self.staked_minor


class Settlement(msgspec.Struct, array_like=True, gc=False):
    """A market result in progress: the first slice was logged, the rest is
    resulted slice by slice from `cursor` (an index into the market's bet
    ids) up to `total`, the number of bets the market had when it began."""

    request_id: str
    kind: ResultKind
    status: MarketStatus
    """The market's status once the last slice is applied."""
    winners: tuple[Winner, ...]
    actor: str
    reason: str
    window: tuple[int, int] | None
    """A windowed void: only the bets placed in [from, to)."""
    cursor: int
    total: int
    bets_affected: int = 0
    paid_minor: int = 0
    """Net paid to players by the slices so far."""
    owed: dict[str, int] = msgspec.field(default_factory=dict)
    """account -> what earlier slices took back beyond the player's balance:
    taken from the player's later credits in this result, and written off
    by the house if still owed after the last slice."""


class LedgerState(msgspec.Struct, array_like=True, gc=False):
    config: LedgerConfig
    accounts: dict[str, Account]
    markets: dict[str, Market] = msgspec.field(default_factory=dict)
    bets: dict[str, Bet] = msgspec.field(default_factory=dict)
    replies: dict[str, AnyReply] = msgspec.field(default_factory=dict)
    """request id -> the first reply, for the idempotency retention window."""
    reply_order: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """(at_ms, request id) in log order; entries before `reply_order_head` are expired."""
    reply_order_head: int = 0
    now_ms: int = 0
    """Log time: the newest event time applied (never moves backwards)."""
    next_bet_number: int = 1
    next_transaction_number: int = 1
    events_applied: int = 0
    feed_cursors: dict[str, int] = msgspec.field(default_factory=dict)
    """producer -> the provider cursor every applied feed batch covers."""
    producers_down: dict[str, int] = msgspec.field(default_factory=dict)
    """producer -> since when (log ms) it is down: its markets take no bets."""
    pending_bets: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """(release_ms, bet id) of held in-play bets, sorted."""
    settlements: dict[str, Settlement] = msgspec.field(default_factory=dict)
    """market id -> its result in progress, while it still has slices to go."""
    archive_queue: list[tuple[int, str]] = msgspec.field(default_factory=list)
    """(due ms, market id), sorted: each final result's market, to archive
    `bet_retention_ms` after it, and the deferred ones (core/archiving.py).
    An entry whose market was resulted again since is stale, and dropped."""
    archiving: str = ""
    """The market whose bets are being archived over several events."""
    archived_markets: int = 0
    archived_bets: int = 0


def new_state(config: LedgerConfig | None = None) -> LedgerState:
    config = config or LedgerConfig()
    accounts = {name: Account(account_id=name, kind="system") for name in SYSTEM_ACCOUNTS}
    return LedgerState(config=config, accounts=accounts)
