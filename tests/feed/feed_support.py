"""Shared by the feed tests: a partition's ledger fed in-process (the fold
every real partition must equal)."""

from __future__ import annotations

from collections.abc import Sequence

from ironbook import core
from ironbook.adapters.feed.messages import AnyFeedMessage
from ironbook.core import acting, issued
from ironbook.core.events import FeedReply
from ironbook.services.feed.conflate import Conflation

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


MarketState = dict[str, tuple[str, bool, int, dict[str, int]]]


class Partition:
    def __init__(self, producer: str = "sim") -> None:
        self.producer = producer
        self.state = core.new_state()
        self.now_ms = 0

    def feed(self, messages: Sequence[AnyFeedMessage]) -> FeedReply:
        conflation = Conflation()
        for message in messages:
            conflation.add(message)
        self.now_ms += 1
        outcome = core.decide(
            self.state, issued(conflation.batch(self.producer), PEOPLE), self.now_ms
        )
        assert isinstance(outcome, core.Accepted), outcome
        for event in outcome.events:
            core.apply(self.state, event)
        assert isinstance(outcome.result, FeedReply)
        return outcome.result

    @property
    def cursor(self) -> int:
        return self.state.feed_cursors.get(self.producer, 0)

    def markets(self) -> MarketState:
        return {
            m.market_id: (
                m.status,
                m.in_play,
                m.bet_delay_s,
                {s.selection_id: s.odds for s in m.selections.values()},
            )
            for m in self.state.markets.values()
        }
