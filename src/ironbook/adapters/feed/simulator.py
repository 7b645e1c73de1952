"""The built-in odds provider: a deterministic simulated race day.

A meeting of football matches (1X2 and over/under 2.5 goals) and horse races
(win markets, 6–12 runners). Every event is created pre-match, goes in-play
(all its markets stopped at the kick-off / the off, then reopened in-play with
a bet delay), has incidents in-play (bet stop, reopen at new prices),
finishes (markets closed), and is settled a few seconds later; now and then a
settlement is rolled back and resettled, a result is corrected, or a market is
cancelled (voided, sometimes only for a window of time). A finished event is
replaced by a new one, so a long run always has live markets. Prices
random-walk on the price ladder at a configurable rate, and the producer
heartbeats (`alive`) every second.

The simulator is pure: given the config and the epoch it yields the same
messages, with the same cursors and times, every time (`seed` picks the
world). It runs in simulated time; `ironbook.services.feed.provider` paces it
against the wall clock and publishes what it yields. `shift_ms` moves the
whole future by a delay (used when a restarted publisher resumes after some
downtime: the world carries on from where it stopped).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    BetCancel,
    BetSettlement,
    BetStop,
    MarketSelection,
    NewMarket,
    OddsChange,
    Price,
    Result,
    RollbackBetSettlement,
    Sport,
    valid_producer,
)
from ironbook.core.odds import LADDER, MAX_ODDS, MIN_ODDS, snap_to_ladder

_US_PER_MS = 1_000
_US_PER_S = 1_000_000

_TEAMS = (
    "Arsenal", "Aston Villa", "Bournemouth", "Brentford", "Brighton", "Chelsea",
    "Crystal Palace", "Everton", "Fulham", "Liverpool", "Man City", "Man United",
    "Newcastle", "Nottm Forest", "Tottenham", "West Ham", "Wolves", "Leeds",
    "Burnley", "Sunderland",
)  # fmt: skip
_HORSES = (
    "Silver Arrow", "Midnight Run", "Golden Hour", "Storm Chaser", "Quiet Reply",
    "Northern Star", "Red Rum Again", "Blue Lagoon", "Desert Wind", "Iron Duke",
    "Lucky Strike", "Morning Glory", "Fast Company", "Harbour Light", "Kings Road",
    "Wild Card", "Paper Moon", "Last Orders", "High Tide", "Second Wind",
)  # fmt: skip
_COURSES = ("Ascot", "Cheltenham", "Newmarket", "York", "Aintree", "Epsom", "Goodwood")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    producer: str = "sim"
    seed: int = 1
    odds_changes_per_s: int = 200
    """Price changes per second of simulated time (0: prices never move)."""
    football_events: int = 4
    """Football matches scheduled at any time (each replaced when it ends)."""
    races: int = 3
    pre_match_s: int = 60
    football_in_play_s: int = 180
    race_in_play_s: int = 45
    football_bet_delay_s: int = 5
    race_bet_delay_s: int = 0
    alive_interval_ms: int = 1_000
    settle_after_s: int = 3
    rollback_chance: float = 0.05
    """Per settled market: the settlement is rolled back, then resettled."""
    correction_chance: float = 0.03
    """Per settled market: a second settlement with another result follows."""
    cancel_chance: float = 0.03
    """Per market: cancelled (voided) instead of settled."""
    window_cancel_chance: float = 0.03
    """Per market: bets placed in the first seconds in-play are cancelled,
    the rest settled."""
    dead_heat_chance: float = 0.1
    """Per race: two runners dead-heat for the win."""

    def __post_init__(self) -> None:
        if not valid_producer(self.producer):
            raise ValueError(f"producer {self.producer!r} must be 1-32 of [A-Za-z0-9_-]")
        if self.odds_changes_per_s < 0 or self.odds_changes_per_s > 100_000:
            raise ValueError("odds_changes_per_s must be 0..100000")
        if self.football_events < 0 or self.races < 0 or self.football_events + self.races < 1:
            raise ValueError("the meeting needs at least one event")
        if min(self.pre_match_s, self.football_in_play_s, self.race_in_play_s) < 1:
            raise ValueError("phases last at least 1 s")
        if self.alive_interval_ms < 100:
            raise ValueError("alive_interval_ms must be at least 100")


class _Market(msgspec.Struct):
    market_id: str
    event_id: str
    selection_ids: list[str]
    prices: dict[str, int]
    status: Literal["open", "suspended", "closed"] = "open"


class _Event(msgspec.Struct):
    event_id: str
    sport: Sport
    market_ids: list[str]
    in_play_from_ms: int = 0
    finished: bool = False


# What the world does next: each action is scheduled at a simulated time.


class _Alive(msgspec.Struct, frozen=True, tag="alive"):
    """The producer heartbeat."""


class _Tick(msgspec.Struct, frozen=True, tag="tick"):
    """One price change somewhere in the open markets."""


class _CreateEvent(msgspec.Struct, frozen=True, tag="create_event"):
    sport: Sport
    starts_in_us: int
    """From its creation to the kick-off / the off, on top of the pre-match phase."""


class _Stop(msgspec.Struct, frozen=True, tag="stop"):
    event_id: str


class _GoInPlay(msgspec.Struct, frozen=True, tag="go_in_play"):
    event_id: str


class _Incident(msgspec.Struct, frozen=True, tag="incident"):
    event_id: str


class _Reopen(msgspec.Struct, frozen=True, tag="reopen"):
    event_id: str


class _Finish(msgspec.Struct, frozen=True, tag="finish"):
    event_id: str


class _Settle(msgspec.Struct, frozen=True, tag="settle"):
    market_id: str


class _Rollback(msgspec.Struct, frozen=True, tag="rollback"):
    market_id: str


class _Resettle(msgspec.Struct, frozen=True, tag="resettle"):
    """A settlement after a rollback, or a correction of the last one."""

    market_id: str


_Action = (
    _Alive
    | _Tick
    | _CreateEvent
    | _Stop
    | _GoInPlay
    | _Incident
    | _Reopen
    | _Finish
    | _Settle
    | _Rollback
    | _Resettle
)
_Due = tuple[int, int, _Action]
"""(at_us, order, action): a heap entry; `order` is unique and breaks ties."""

_LADDER_INDEX = {odds: index for index, odds in enumerate(LADDER)}
_LADDER_TOP = len(LADDER) - 1
_TICK_STEPS = (-2, -1, 1, 2)
_IMPLIED = {odds: 100 / odds for odds in LADDER}
_BOOK_LOW, _BOOK_HIGH = 1.03, 1.15
"""The band of the sum of implied probabilities (the bookmaker's margin)."""

_RngState = tuple[int, tuple[int, ...], float | None]


class SimulatorState(msgspec.Struct, tag="simulator_state/2"):
    """Everything a simulator knows: the simulator holds one and works on it,
    and restoring a copy continues the same world (a checkpoint, so a restart
    need not replay the world from its start). The tag names the format; a
    checkpoint of the older format (actions as strings) does not decode."""

    producer: str
    seed: int
    rate: int
    first_cursor: int
    rng: _RngState
    """The generator's state as of the copy (kept current only in copies)."""
    now_us: int
    cursor: int
    """The cursor of the last message generated (some may wait in `pending`)."""
    yielded: int
    """The cursor of the last message handed out."""
    orders: int
    events_made: int
    actions: list[_Due]
    """A heap."""
    pending: list[AnyFeedMessage]
    """Generated, not yet handed out, oldest first."""
    events: dict[str, _Event]
    markets: dict[str, _Market]
    open: dict[str, None]
    """Markets open for bets, as an ordered set (deterministic choice)."""
    last_result: dict[str, tuple[Result, ...]]
    ticks: int
    tick_origin_us: int


_STATE_DECODER = msgspec.msgpack.Decoder(SimulatorState)
_STATE_ENCODER = msgspec.msgpack.Encoder()


def _id_prefix(config: SimulatorConfig, first_cursor: int) -> str:
    return f"{config.producer}{config.seed}" + (f"w{first_cursor}" if first_cursor > 1 else "")


def _move(odds: int, ticks: int) -> int:
    """`core.odds.ticks_away` without its search (the simulator's hot path)."""
    return LADDER[max(0, min(_LADDER_TOP, _LADDER_INDEX[odds] + ticks))]


class Simulator:
    def __init__(self, config: SimulatorConfig, *, epoch_ms: int, first_cursor: int = 1) -> None:
        """A world whose first message has cursor `first_cursor` (a world
        started after an earlier one in the same feed: its event ids carry
        the cursor too, so they never collide with the earlier world's)."""
        assert first_cursor >= 1
        self.config = config
        self._rng = random.Random(f"ironbook-feed/{config.producer}/{config.seed}")
        now_us = epoch_ms * _US_PER_MS
        self._state = SimulatorState(
            producer=config.producer,
            seed=config.seed,
            rate=config.odds_changes_per_s,
            first_cursor=first_cursor,
            rng=self._rng.getstate(),
            now_us=now_us,
            cursor=first_cursor - 1,
            yielded=first_cursor - 1,
            orders=0,
            events_made=0,
            actions=[],
            pending=[],
            events={},
            markets={},
            open={},
            last_result={},
            ticks=0,
            tick_origin_us=now_us,
        )
        self._id_prefix = _id_prefix(config, first_cursor)
        self._open_list: list[str] | None = None
        """`open` as a list, for random choice; None when `open` changed."""
        self._schedule(now_us, _Alive())
        if config.odds_changes_per_s:
            self._schedule(self._next_tick_us(), _Tick())
        slots = config.football_events + config.races
        for index in range(slots):
            sport: Sport = "football" if index < config.football_events else "horse_racing"
            # Kick-offs spread over the pre-match phase, so events go in-play
            # (and finish) one after another from the start.
            offset_us = config.pre_match_s * _US_PER_S * index // slots
            self._schedule(now_us, _CreateEvent(sport, offset_us))

    @property
    def first_cursor(self) -> int:
        return self._state.first_cursor

    @property
    def live_events(self) -> int:
        """Events created and not yet done with."""
        return len(self._state.events)

    def state(self) -> SimulatorState:
        """A copy of the whole state, the generator's included."""
        self._state.rng = self._rng.getstate()
        return _STATE_DECODER.decode(_STATE_ENCODER.encode(self._state))

    @classmethod
    def restore(cls, config: SimulatorConfig, state: SimulatorState) -> Simulator:
        """The simulator `state` was taken from; `config` must be the one it
        ran with (ValueError otherwise). The simulator works on `state` from
        now on."""
        if (state.producer, state.seed, state.rate) != (
            config.producer,
            config.seed,
            config.odds_changes_per_s,
        ):
            raise ValueError("the state is of a simulator with another producer, seed or rate")
        simulator = cls(config, epoch_ms=0, first_cursor=state.first_cursor)
        version, internal, gauss = state.rng
        simulator._rng.setstate((version, tuple(internal), gauss))
        simulator._state = state
        return simulator

    @property
    def now_ms(self) -> int:
        """The simulated clock: the time of the newest message generated."""
        return self._state.now_us // _US_PER_MS

    @property
    def cursor(self) -> int:
        """The cursor of the last message yielded."""
        return self._state.yielded

    def next_ts_ms(self) -> int:
        """When the next message is due (simulated time)."""
        self._fill()
        return self._state.pending[0].ts_ms

    def next(self) -> AnyFeedMessage:
        self._fill()
        message = self._state.pending.pop(0)
        self._state.yielded = message.cursor
        return message

    def take_due(self, now_ms: int, limit: int) -> list[AnyFeedMessage]:
        """The messages due at or before `now_ms`, at most `limit`."""
        due: list[AnyFeedMessage] = []
        while len(due) < limit and self.next_ts_ms() <= now_ms:
            due.append(self.next())
        return due

    def shift_ms(self, delay_ms: int) -> None:
        """Move everything not yet yielded `delay_ms` later."""
        assert delay_ms >= 0
        delay_us = delay_ms * _US_PER_MS
        self._state.now_us += delay_us
        self._state.tick_origin_us += delay_us
        state = self._state
        state.actions = [
            (at_us + delay_us, order, action) for at_us, order, action in state.actions
        ]
        heapq.heapify(state.actions)
        state.pending = [
            msgspec.structs.replace(message, ts_ms=message.ts_ms + delay_ms)
            for message in state.pending
        ]

    # -- the world ---------------------------------------------------------

    def _fill(self) -> None:
        while not self._state.pending:
            at_us, _, action = heapq.heappop(self._state.actions)
            self._state.now_us = max(self._state.now_us, at_us)
            self._run(action)

    def _schedule(self, at_us: int, action: _Action) -> None:
        self._state.orders += 1
        heapq.heappush(self._state.actions, (at_us, self._state.orders, action))

    def _after(self, seconds: float, action: _Action) -> None:
        self._schedule(self._state.now_us + int(seconds * _US_PER_S), action)

    def _next_tick_us(self) -> int:
        self._state.ticks += 1
        return (
            self._state.tick_origin_us
            + self._state.ticks * _US_PER_S // self.config.odds_changes_per_s
        )

    def _emit(self, kind: type[AnyFeedMessage], **fields: Any) -> AnyFeedMessage:
        self._state.cursor += 1
        message = kind(
            producer=self.config.producer,
            cursor=self._state.cursor,
            ts_ms=self._state.now_us // _US_PER_MS,
            **fields,
        )
        self._state.pending.append(message)
        return message

    def _run(self, action: _Action) -> None:
        match action:
            case _Alive():
                self._emit(Alive)
                self._after(self.config.alive_interval_ms / 1000, _Alive())
            case _Tick():
                self._tick()
                self._schedule(self._next_tick_us(), _Tick())
            case _CreateEvent(sport="football", starts_in_us=starts_in_us):
                self._create_football(starts_in_us)
            case _CreateEvent(starts_in_us=starts_in_us):
                self._create_race(starts_in_us)
            case _Stop(event_id):
                self._stop(event_id)
            case _GoInPlay(event_id):
                self._go_in_play(event_id)
            case _Incident(event_id):
                self._incident(event_id)
            case _Reopen(event_id):
                self._reopen(event_id)
            case _Finish(event_id):
                self._finish(event_id)
            case _Settle(market_id):
                self._settle(market_id)
            case _Rollback(market_id):
                self._rollback(market_id)
            case _Resettle(market_id):
                self._resettle(market_id)

    def _new_event_id(self, prefix: str) -> str:
        self._state.events_made += 1
        return f"{self._id_prefix}-{prefix}{self._state.events_made}"

    def _price(self, probability: float, margin: float = 1.06) -> int:
        raw = int(100 / max(probability * margin, 1e-6))
        return snap_to_ladder(max(MIN_ODDS, min(MAX_ODDS, raw)), "nearest")

    def _add_market(
        self,
        event: _Event,
        event_name: str,
        market_id: str,
        market_name: str,
        selections: list[tuple[str, str, float]],
    ) -> None:
        specs = tuple(MarketSelection(sid, name, self._price(p)) for sid, name, p in selections)
        market = _Market(
            market_id=market_id,
            event_id=event.event_id,
            selection_ids=[spec.selection_id for spec in specs],
            prices={spec.selection_id: spec.odds for spec in specs},
        )
        self._state.markets[market_id] = market
        self._state.open[market_id] = None
        self._open_list = None
        event.market_ids.append(market_id)
        self._emit(
            NewMarket,
            event_id=event.event_id,
            event_name=event_name,
            sport=event.sport,
            market_id=market_id,
            market_name=market_name,
            selections=specs,
        )

    def _create_football(self, kick_off_in_us: int) -> None:
        rng = self._rng
        home, away = rng.sample(_TEAMS, 2)
        event = _Event(self._new_event_id("fb"), "football", [])
        self._state.events[event.event_id] = event
        name = f"{home} v {away}"
        p_home = rng.uniform(0.2, 0.6)
        p_draw = rng.uniform(0.2, 0.3)
        self._add_market(
            event,
            name,
            f"{event.event_id}-1x2",
            "Match result",
            [
                ("home", home, p_home),
                ("draw", "Draw", p_draw),
                ("away", away, max(0.05, 1 - p_home - p_draw)),
            ],
        )
        p_over = rng.uniform(0.35, 0.65)
        self._add_market(
            event,
            name,
            f"{event.event_id}-ou25",
            "Total goals over/under 2.5",
            [("over", "Over 2.5", p_over), ("under", "Under 2.5", 1 - p_over)],
        )
        self._schedule(
            self._state.now_us + kick_off_in_us + self._pre_match_us(), _Stop(event.event_id)
        )

    def _create_race(self, off_in_us: int) -> None:
        rng = self._rng
        runners = rng.randint(6, 12)
        names = rng.sample(_HORSES, runners)
        strengths = [rng.uniform(0.5, 5.0) for _ in range(runners)]
        total = sum(strengths)
        event = _Event(self._new_event_id("hr"), "horse_racing", [])
        self._state.events[event.event_id] = event
        minute = rng.randrange(0, 60, 5)
        name = f"{rng.choice(_COURSES)} {rng.randint(12, 20):02d}:{minute:02d}"
        self._add_market(
            event,
            name,
            f"{event.event_id}-win",
            "Win",
            [(f"r{i + 1}", names[i], strengths[i] / total) for i in range(runners)],
        )
        self._schedule(self._state.now_us + off_in_us + self._pre_match_us(), _Stop(event.event_id))

    def _pre_match_us(self) -> int:
        return self.config.pre_match_s * _US_PER_S

    def _bet_stop(self, event: _Event) -> None:
        stopped = [m for m in event.market_ids if self._state.markets[m].status == "open"]
        for market_id in stopped:
            self._state.markets[market_id].status = "suspended"
            self._state.open.pop(market_id, None)
            self._open_list = None
        if stopped:
            self._emit(
                BetStop,
                event_id=event.event_id,
                market_ids=tuple(stopped),
            )

    def _stop(self, event_id: str) -> None:
        """The kick-off / the off: every market stops, then reopens in-play."""
        self._bet_stop(self._state.events[event_id])
        self._after(1, _GoInPlay(event_id))

    def _reopen_markets(self, event: _Event, *, in_play: bool, jump_ticks: int) -> None:
        delay = (
            self.config.football_bet_delay_s
            if event.sport == "football"
            else self.config.race_bet_delay_s
        )
        for market_id in event.market_ids:
            market = self._state.markets[market_id]
            if market.status != "suspended":
                continue
            prices = []
            for selection_id in market.selection_ids:
                moved = _move(
                    market.prices[selection_id], self._rng.randint(-jump_ticks, jump_ticks)
                )
                market.prices[selection_id] = moved
                prices.append(Price(selection_id, moved))
            market.status = "open"
            self._state.open[market_id] = None
            self._open_list = None
            self._emit(
                OddsChange,
                event_id=event.event_id,
                market_id=market_id,
                status="open",
                in_play=in_play,
                bet_delay_s=delay if in_play else 0,
                prices=tuple(prices),
            )

    def _go_in_play(self, event_id: str) -> None:
        event = self._state.events[event_id]
        event.in_play_from_ms = self._state.now_us // _US_PER_MS
        self._reopen_markets(event, in_play=True, jump_ticks=3)
        length_s = (
            self.config.football_in_play_s
            if event.sport == "football"
            else self.config.race_in_play_s
        )
        self._after(length_s, _Finish(event_id))
        if event.sport == "football":
            self._after(self._rng.uniform(0.2, 0.45) * length_s, _Incident(event_id))

    def _incident(self, event_id: str) -> None:
        """A goal or a red card: stop, then reopen a few seconds later."""
        event = self._state.events.get(event_id)
        if event is None or event.finished:
            return
        self._bet_stop(event)
        self._after(self._rng.uniform(2, 5), _Reopen(event_id))
        length_s = self.config.football_in_play_s
        self._after(self._rng.uniform(0.2, 0.45) * length_s, _Incident(event_id))

    def _reopen(self, event_id: str) -> None:
        event = self._state.events.get(event_id)
        if event is not None and not event.finished:
            self._reopen_markets(event, in_play=True, jump_ticks=8)

    def _tick(self) -> None:
        if not self._state.open:
            return
        if self._open_list is None:
            self._open_list = list(self._state.open)
        random_ = self._rng.random
        market = self._state.markets[self._open_list[int(random_() * len(self._open_list))]]
        selection_ids = market.selection_ids
        first = int(random_() * len(selection_ids))
        moved = [selection_ids[first]]
        if random_() < 0.5:
            moved.append(selection_ids[(first + 1) % len(selection_ids)])
        # A trader keeps the book's margin in a band: below it prices only
        # shorten, above it they only drift out.
        book = sum(_IMPLIED[odds] for odds in market.prices.values())
        prices = []
        for selection_id in moved:
            step = _TICK_STEPS[int(random_() * 4)]
            if book < _BOOK_LOW:
                step = -abs(step)
            elif book > _BOOK_HIGH:
                step = abs(step)
            price = _move(market.prices[selection_id], step)
            market.prices[selection_id] = price
            prices.append(Price(selection_id, price))
        self._emit(
            OddsChange,
            event_id=market.event_id,
            market_id=market.market_id,
            prices=tuple(prices),
        )

    def _finish(self, event_id: str) -> None:
        event = self._state.events[event_id]
        event.finished = True
        for market_id in event.market_ids:
            market = self._state.markets[market_id]
            if market.status == "closed":
                continue
            market.status = "closed"
            self._state.open.pop(market_id, None)
            self._open_list = None
            self._emit(
                OddsChange,
                event_id=event_id,
                market_id=market_id,
                status="closed",
            )
        for market_id in event.market_ids:
            self._after(self.config.settle_after_s, _Settle(market_id))
        # A finished event makes room for a new one of the same sport.
        self._after(
            self.config.settle_after_s + 10,
            _CreateEvent(event.sport, self._rng.randint(0, self._pre_match_us() // 2)),
        )

    def _winners(self, market: _Market, *, avoid: tuple[Result, ...] = ()) -> tuple[Result, ...]:
        """Drawn by the implied probabilities; never equal to `avoid`."""
        rng = self._rng
        weights = [1 / market.prices[s] for s in market.selection_ids]
        for _ in range(20):
            ordered = list(market.selection_ids)
            first = rng.choices(ordered, weights=weights)[0]
            is_race = self._state.events[market.event_id].sport == "horse_racing"
            if is_race and rng.random() < self.config.dead_heat_chance:
                second = rng.choice([s for s in ordered if s != first])
                result: tuple[Result, ...] = (Result(first, 2), Result(second, 2))
            else:
                result = (Result(first),)
            if result != avoid:
                return result
        return (Result(next(s for s in market.selection_ids if Result(s) not in avoid)),)

    def _settle(self, market_id: str) -> None:
        market = self._state.markets[market_id]
        event = self._state.events[market.event_id]
        config, rng = self.config, self._rng
        if rng.random() < config.cancel_chance:
            self._emit(
                BetCancel,
                event_id=event.event_id,
                market_id=market_id,
                reason="event abandoned",
            )
            self._forget(market_id)
            return
        if rng.random() < config.window_cancel_chance:
            start_ms = event.in_play_from_ms
            self._emit(
                BetCancel,
                event_id=event.event_id,
                market_id=market_id,
                reason="bets accepted during a missed incident",
                start_ms=start_ms,
                end_ms=start_ms + 10_000,
            )
        winners = self._winners(market)
        self._settle_with(market, winners)
        draw = rng.random()
        if draw < config.rollback_chance:
            self._after(3, _Rollback(market_id))
        elif draw < config.rollback_chance + config.correction_chance:
            self._after(3, _Resettle(market_id))
        else:
            self._forget(market_id)

    def _settle_with(self, market: _Market, winners: tuple[Result, ...]) -> None:
        self._state.last_result[market.market_id] = winners
        self._emit(
            BetSettlement, event_id=market.event_id, market_id=market.market_id, winners=winners
        )

    def _rollback(self, market_id: str) -> None:
        market = self._state.markets[market_id]
        self._emit(
            RollbackBetSettlement,
            event_id=market.event_id,
            market_id=market_id,
        )
        self._after(2, _Resettle(market_id))

    def _resettle(self, market_id: str) -> None:
        market = self._state.markets[market_id]
        previous = self._state.last_result.get(market_id, ())
        self._settle_with(market, self._winners(market, avoid=previous))
        self._forget(market_id)

    def _forget(self, market_id: str) -> None:
        """A market that is done; its event goes with its last market."""
        market = self._state.markets.pop(market_id)
        self._state.last_result.pop(market_id, None)
        event = self._state.events[market.event_id]
        if all(m not in self._state.markets for m in event.market_ids):
            del self._state.events[market.event_id]
