"""Random sequences of feed batches, producer outages, in-play bets, releases,
results, rollbacks and windowed cancels: after every step the ledger's
invariants hold, money is conserved, a release refunds exactly the rejected
stakes, and replaying the log (or a snapshot) gives the same state."""

from __future__ import annotations

from hypothesis import event as label
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from ledger_driver import Ledger

from ironbook.core import (
    CASHIER,
    Accepted,
    FeedBatch,
    FeedMarket,
    LedgerConfig,
    ReleaseBets,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SetProducerStatus,
    SettleMarket,
    VoidMarket,
    Winner,
    apply,
    check_invariants,
    new_state,
    restore_snapshot,
    snapshot_bytes,
    state_hash,
)
from ironbook.core.events import BetsReleased
from ironbook.core.odds import hundredths_exact

PRODUCER = "sim"
PLAYERS = ("p0", "p1")
MARKETS = ("m0", "m1", "m2")
SELECTIONS = ("a", "b")
PRICES = (150, 200, 250, 300)

markets = st.sampled_from(MARKETS)
selections = st.sampled_from(SELECTIONS)
prices = st.sampled_from(PRICES)
MEANWHILE = ("nothing", "price up", "price down", "suspend", "close", "down")
"""What happens during a held bet's delay."""


class InPlayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        self.cursor = 0
        self.deposits_minor = 0

    def feed(self, *items: FeedMarket) -> None:
        self.cursor += 1
        seq = self.cursor
        stamped = tuple(FeedMarket(**{**_fields(item), "seq": seq}) for item in items)
        outcome = self.ledger.submit(
            FeedBatch(
                request_id=self.ledger.request_id(),
                producer=PRODUCER,
                to_cursor=seq,
                markets=stamped,
            )
        )
        assert isinstance(outcome, Accepted)
        assert self.ledger.state.feed_cursors[PRODUCER] == seq

    @initialize(delays=st.lists(st.sampled_from((3, 1, 0)), min_size=3, max_size=3))
    def start(self, delays: list[int]) -> None:
        self.ledger = Ledger(
            LedgerConfig(max_liability_minor=5_000, max_market_liability_minor=8_000)
        )
        for player in PLAYERS:
            self.ledger.open_account(player, 5_000)
            self.deposits_minor += 5_000
        self.feed(
            *(
                FeedMarket(
                    market_id=market_id,
                    seq=0,
                    event_id="ev",
                    name=market_id,
                    selections=tuple(
                        SelectionSpec(selection_id=s, name=s, odds=200) for s in SELECTIONS
                    ),
                    in_play=delay > 0,
                    bet_delay_s=delay,
                )
                for market_id, delay in zip(MARKETS, delays, strict=True)
            )
        )

    @rule(market_id=markets, selection_id=selections, odds=prices)
    def price(self, market_id: str, selection_id: str, odds: int) -> None:
        self.feed(
            FeedMarket(
                market_id=market_id,
                seq=0,
                prices=(SelectionPrice(selection_id=selection_id, odds=odds),),
            )
        )

    @rule(market_id=markets, status=st.sampled_from(("open", "open", "suspended", "closed")))
    def status(self, market_id: str, status: str) -> None:
        self.feed(FeedMarket(market_id=market_id, seq=0, status=status))  # type: ignore[arg-type]

    @rule(down=st.sampled_from((False, False, True)))
    def producer(self, down: bool) -> None:
        self.ledger.ok(
            SetProducerStatus(request_id=self.ledger.request_id(), producer=PRODUCER, down=down)
        )

    @rule(
        player=st.sampled_from(PLAYERS),
        stake=st.sampled_from((10, 100, 500, 2_000)),
        legs=st.lists(
            st.tuples(markets, selections), min_size=1, max_size=2, unique_by=lambda leg: leg[0]
        ),
        policy=st.sampled_from(("none", "better", "any")),
    )
    def bet(self, player: str, stake: int, legs: list[tuple[str, str]], policy: str) -> None:
        quoted = [(m, s, self.ledger.state.markets[m].selections[s].odds) for m, s in legs]
        self.ledger.submit(self.ledger.bet_command(player, stake, *quoted, policy=policy))  # type: ignore[arg-type]

    @rule(
        player=st.sampled_from(PLAYERS),
        market_id=markets,
        selection_id=selections,
        policy=st.sampled_from(("none", "better", "any")),
        meanwhile=st.sampled_from(
            ("nothing", "price up", "price down", "suspend", "close", "down")
        ),
    )
    def bet_and_wait_out_the_delay(
        self, player: str, market_id: str, selection_id: str, policy: str, meanwhile: str
    ) -> None:
        self.bet(player, 100, [(market_id, selection_id)], policy)
        odds = hundredths_exact(self.ledger.state.markets[market_id].selections[selection_id].odds)
        if meanwhile == "price up" and odds < PRICES[-1]:
            self.price(market_id, selection_id, PRICES[PRICES.index(odds) + 1])
        elif meanwhile == "price down" and odds > PRICES[0]:
            self.price(market_id, selection_id, PRICES[PRICES.index(odds) - 1])
        elif meanwhile in ("suspend", "close"):
            self.status(market_id, "suspended" if meanwhile == "suspend" else "closed")
        elif meanwhile == "down":
            self.producer(down=True)
        self.release(3_000)

    @rule(ms=st.sampled_from((100, 1_000, 3_000)))
    def release(self, ms: int) -> None:
        self.ledger.advance(ms)
        before = {p: self.ledger.balance(p) for p in PLAYERS}
        due = [b for r, b in self.ledger.state.pending_bets if r <= self.ledger.now_ms]
        log_length = len(self.ledger.log)
        self.ledger.ok(ReleaseBets(request_id=self.ledger.request_id()))
        new_events = self.ledger.log[log_length:]
        refunds = dict.fromkeys(PLAYERS, 0)
        released: list[str] = []
        for event in new_events:
            assert isinstance(event, BetsReleased)
            released += [*event.accepted, *(b for b, _ in event.rejected)]
            for bet_id in event.accepted:
                bet = self.ledger.state.bets[bet_id]
                assert bet.status == "open"
            for bet_id, code in event.rejected:
                bet = self.ledger.state.bets[bet_id]
                assert code in ("market_suspended", "market_closed", "price_changed")
                assert (bet.status, bet.reject_code) == ("rejected", code)
                refunds[bet.account_id] += bet.stake_minor
        assert sorted(released) == sorted(due)
        for new_event in new_events:
            assert isinstance(new_event, BetsReleased)
            if new_event.accepted:
                label("a held bet accepted")
            if new_event.rejected:
                label("a held bet rejected")
        for player in PLAYERS:
            assert self.ledger.balance(player) == before[player] + refunds[player]

    @rule(market_id=markets, winner=selections)
    def settle(self, market_id: str, winner: str) -> None:
        market = self.ledger.state.markets[market_id]
        if market.status in ("open", "suspended"):
            self.feed(FeedMarket(market_id=market_id, seq=0, status="closed"))
        self.ledger.submit(
            SettleMarket(
                request_id=self.ledger.request_id(),
                market_id=market_id,
                winners=(Winner(selection_id=winner),),
            )
        )

    @rule(market_id=markets)
    def rollback(self, market_id: str) -> None:
        self.ledger.submit(
            RollbackSettlement(
                request_id=self.ledger.request_id(), market_id=market_id, actor="a", reason="r"
            )
        )

    @rule(market_id=markets, back_ms=st.sampled_from((0, 500, 5_000)), full=st.booleans())
    def cancel(self, market_id: str, back_ms: int, full: bool) -> None:
        now = self.ledger.now_ms
        self.ledger.submit(
            VoidMarket(
                request_id=self.ledger.request_id(),
                market_id=market_id,
                actor="a",
                reason="r",
                placed_from_ms=None if full else max(0, now - back_ms),
                placed_to_ms=None if full else now + 1,
            )
        )

    @invariant()
    def books_hold(self) -> None:
        state = self.ledger.state
        assert check_invariants(state) == []
        players = sum(a.balance_minor for a in state.accounts.values() if a.kind == "player")
        assert -self.ledger.balance(CASHIER) == self.deposits_minor
        assert players + self.ledger.held() + self.ledger.house() == self.deposits_minor

    @invariant()
    def replay_and_snapshot_agree(self) -> None:
        replayed = new_state(self.ledger.state.config)
        for event in self.ledger.log:
            apply(replayed, event)
        assert state_hash(replayed) == state_hash(self.ledger.state)
        assert state_hash(restore_snapshot(snapshot_bytes(replayed))) == state_hash(replayed)


def _fields(item: FeedMarket) -> dict[str, object]:
    return {name: getattr(item, name) for name in item.__struct_fields__}


InPlayMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestInPlay = InPlayMachine.TestCase
