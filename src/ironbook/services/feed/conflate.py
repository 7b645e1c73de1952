"""Conflation: many feed messages folded into one change per market.

Prices are state, not a log: when the feed outruns the ledger, only the
newest price of each selection, the newest status and the newest in-play flag
need to go in. A fold over every message from a cursor at or before a
partition's own cursor gives that partition exactly the state a message-by-
message fold would (each item carries the cursor of the newest message that
touched it, and the ledger skips items it already holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ironbook import core
from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    BetStop,
    NewMarket,
    OddsChange,
)

MAX_NAME_CHARS = 200


@dataclass(slots=True)
class MarketChange:
    market_id: str
    event_id: str
    seq: int = 0
    """The cursor of the newest message that touched the market."""
    ts_ms: int = 0
    """The provider time of that message."""
    name: str = ""
    selections: tuple[core.SelectionSpec, ...] = ()
    in_play: bool | None = None
    bet_delay_s: int | None = None
    status: str | None = None
    prices: dict[str, int] = field(default_factory=dict)

    def approx_bytes(self) -> int:
        """At least its encoded size in a `FeedBatch` (MessagePack)."""
        selections = sum(16 + len(s.selection_id) + len(s.name.encode()) for s in self.selections)
        prices = sum(16 + len(s) for s in self.prices)
        ids = len(self.market_id) + len(self.event_id)
        return 48 + ids + len(self.name.encode()) + selections + prices

    def to_feed_market(self) -> core.FeedMarket:
        return core.FeedMarket(
            market_id=self.market_id,
            seq=self.seq,
            event_id=self.event_id,
            name=self.name,
            selections=self.selections,
            in_play=self.in_play,
            bet_delay_s=self.bet_delay_s,
            status=self.status,  # type: ignore[arg-type]
            prices=tuple(core.SelectionPrice(s, odds) for s, odds in self.prices.items()),
        )


class Conflation:
    """One round's messages, folded."""

    def __init__(self) -> None:
        self.changes: dict[str, MarketChange] = {}
        self.messages = 0
        self.from_cursor = 0
        """The cursor of the first message folded in (0: none yet)."""
        self.through_cursor = 0
        self.alive_cursors: list[int] = []
        self.newest_ts_ms = 0
        self.approx_bytes = 0
        """An upper bound on the batch's encoded size (conflation only shrinks it)."""

    def add(self, message: AnyFeedMessage) -> None:
        assert message.cursor > self.through_cursor, "messages must come in cursor order"
        self.messages += 1
        if not self.from_cursor:
            self.from_cursor = message.cursor
        self.through_cursor = message.cursor
        self.newest_ts_ms = max(self.newest_ts_ms, message.ts_ms)
        touched = self._market_ids(message)
        before = sum(self._size(market_id) for market_id in touched)
        if isinstance(message, NewMarket):
            change = self._touch(message.market_id, message.event_id, message)
            change.name = f"{message.event_name}: {message.market_name}"[:MAX_NAME_CHARS]
            change.selections = tuple(
                core.SelectionSpec(s.selection_id, s.name, s.odds) for s in message.selections
            )
            change.in_play = message.in_play
            change.bet_delay_s = message.bet_delay_s
        elif isinstance(message, OddsChange):
            change = self._touch(message.market_id, message.event_id, message)
            if message.status is not None:
                change.status = message.status
            if message.in_play is not None:
                change.in_play = message.in_play
            if message.bet_delay_s is not None:
                change.bet_delay_s = message.bet_delay_s
            for price in message.prices:
                change.prices[price.selection_id] = price.odds
        elif isinstance(message, BetStop):
            for market_id in message.market_ids:
                self._touch(market_id, message.event_id, message).status = "suspended"
        elif isinstance(message, Alive):
            self.alive_cursors.append(message.cursor)
        self.approx_bytes += sum(self._size(market_id) for market_id in touched) - before

    @staticmethod
    def _market_ids(message: AnyFeedMessage) -> tuple[str, ...]:
        if isinstance(message, NewMarket | OddsChange):
            return (message.market_id,)
        if isinstance(message, BetStop):
            return message.market_ids
        return ()

    def _size(self, market_id: str) -> int:
        change = self.changes.get(market_id)
        return 0 if change is None else change.approx_bytes()

    def _touch(self, market_id: str, event_id: str, message: AnyFeedMessage) -> MarketChange:
        change = self.changes.get(market_id)
        if change is None:
            change = self.changes[market_id] = MarketChange(market_id, event_id)
        change.seq = message.cursor
        change.ts_ms = message.ts_ms
        return change

    @property
    def items(self) -> int:
        return len(self.changes)

    def batch(self, producer: str) -> core.FeedBatch:
        """The round's one ledger command. Its request id names the cursor
        range it covers, so the same id always means the same content."""
        return core.FeedBatch(
            request_id=f"feed:{producer}:{self.from_cursor}-{self.through_cursor}",
            producer=producer,
            to_cursor=self.through_cursor,
            markets=tuple(change.to_feed_market() for change in self.changes.values()),
        )
