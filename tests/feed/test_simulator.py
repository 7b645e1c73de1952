"""The simulated provider: deterministic, on the ladder, a whole life per market."""

from __future__ import annotations

import dataclasses
import itertools

import msgspec
import pytest

from ironbook.adapters.feed.messages import (
    Alive,
    AnyFeedMessage,
    BetCancel,
    BetSettlement,
    BetStop,
    NewMarket,
    OddsChange,
    RollbackBetSettlement,
    decode_message,
    encode_message,
    message_subject,
)
from ironbook.adapters.feed.simulator import Simulator, SimulatorConfig, SimulatorState
from ironbook.core.odds import is_on_ladder

FAST = SimulatorConfig(
    seed=7,
    odds_changes_per_s=50,
    pre_match_s=20,
    football_in_play_s=40,
    race_in_play_s=10,
    rollback_chance=0.2,
    correction_chance=0.2,
    cancel_chance=0.1,
    window_cancel_chance=0.1,
    dead_heat_chance=0.3,
)


def _run(config: SimulatorConfig, count: int, epoch_ms: int = 1_000_000) -> list[AnyFeedMessage]:
    simulator = Simulator(config, epoch_ms=epoch_ms)
    return [simulator.next() for _ in range(count)]


def test_same_seed_same_feed_other_seed_other_feed() -> None:
    first = _run(FAST, 8_000)
    assert first == _run(FAST, 8_000)
    other = _run(dataclasses.replace(FAST, seed=8), 8_000)
    assert [encode_message(m) for m in other] != [encode_message(m) for m in first]


def test_cursors_contiguous_and_time_monotonic() -> None:
    messages = _run(FAST, 8_000)
    assert [m.cursor for m in messages] == list(range(1, 8_001))
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(messages))
    assert all(m.producer == "sim" for m in messages)


def test_every_price_is_on_the_ladder() -> None:
    for message in _run(FAST, 8_000):
        if isinstance(message, NewMarket):
            assert all(is_on_ladder(s.odds) for s in message.selections)
        elif isinstance(message, OddsChange):
            assert all(is_on_ladder(p.odds) for p in message.prices)


def test_alive_every_second_and_rate_respected() -> None:
    messages = _run(FAST, 8_000)
    alive = [m.ts_ms for m in messages if isinstance(m, Alive)]
    assert all(b - a == 1_000 for a, b in itertools.pairwise(alive))
    seconds = (messages[-1].ts_ms - messages[0].ts_ms) / 1000
    ticks = sum(1 for m in messages if isinstance(m, OddsChange) and m.status is None)
    assert ticks <= FAST.odds_changes_per_s * seconds + 1


def test_markets_live_a_whole_life() -> None:
    """Created → in-play with a delay → closed → settled (or cancelled); a
    rollback is always followed by a new settlement; results name selections."""
    messages = _run(FAST, 25_000)
    selections: dict[str, set[str]] = {}
    in_play_delays: set[int] = set()
    status: dict[str, str] = {}
    rolled_back: dict[str, int] = {}
    """Market -> when it was rolled back, until it is settled again."""
    seen = {type(m) for m in messages}
    assert {NewMarket, OddsChange, BetStop, BetSettlement, Alive} <= seen
    assert RollbackBetSettlement in seen and BetCancel in seen
    dead_heats = 0
    for message in messages:
        if isinstance(message, NewMarket):
            assert message.market_id not in selections
            selections[message.market_id] = {s.selection_id for s in message.selections}
            status[message.market_id] = "open"
        elif isinstance(message, OddsChange):
            assert message.market_id in selections
            assert {p.selection_id for p in message.prices} <= selections[message.market_id]
            if message.in_play:
                assert message.bet_delay_s is not None
                in_play_delays.add(message.bet_delay_s)
            if message.status is not None:
                status[message.market_id] = message.status
        elif isinstance(message, BetStop):
            for market_id in message.market_ids:
                assert status[market_id] == "open"
                status[market_id] = "suspended"
        elif isinstance(message, BetSettlement):
            assert status[message.market_id] in ("closed", "settled", "rolled_back")
            winners = {w.selection_id for w in message.winners}
            assert winners and winners <= selections[message.market_id]
            dead_heats += any(w.dead_heat > 1 for w in message.winners)
            status[message.market_id] = "settled"
            rolled_back.pop(message.market_id, None)
        elif isinstance(message, RollbackBetSettlement):
            assert status[message.market_id] == "settled"
            status[message.market_id] = "rolled_back"
            rolled_back[message.market_id] = message.ts_ms
    assert in_play_delays == {FAST.football_bet_delay_s, FAST.race_bet_delay_s}
    assert dead_heats > 0
    assert "settled" in status.values()
    last_ms = messages[-1].ts_ms
    assert all(last_ms - at_ms < 10_000 for at_ms in rolled_back.values())


def test_new_events_keep_coming() -> None:
    messages = _run(FAST, 25_000)
    created_at = [m.ts_ms for m in messages if isinstance(m, NewMarket)]
    assert created_at[-1] - created_at[0] > 60_000
    simulator = Simulator(FAST, epoch_ms=0)
    for _ in range(25_000):
        simulator.next()
    assert simulator.live_events <= FAST.football_events + FAST.races + 4


def test_take_due_and_shift() -> None:
    simulator = Simulator(FAST, epoch_ms=0)
    due = simulator.take_due(5_000, limit=100_000)
    assert due and all(m.ts_ms <= 5_000 for m in due)
    assert simulator.next_ts_ms() > 5_000
    before = simulator.next_ts_ms()
    simulator.shift_ms(60_000)
    assert simulator.next_ts_ms() == before + 60_000
    replay = Simulator(FAST, epoch_ms=0)
    replay.take_due(5_000, limit=100_000)
    # After the shift the same world carries on, later.
    shifted = [simulator.next() for _ in range(500)]
    plain = [replay.next() for _ in range(500)]
    assert [msgspec.structs.replace(m, ts_ms=0) for m in shifted] == [
        msgspec.structs.replace(m, ts_ms=0) for m in plain
    ]
    assert all(a.ts_ms == b.ts_ms + 60_000 for a, b in zip(shifted, plain, strict=True))


def test_wire_format_round_trips_and_names_subjects() -> None:
    for message in _run(FAST, 5_000):
        assert decode_message(encode_message(message)) == message
        subject = message_subject(message)
        assert subject.startswith("feed.sim.")
    created = next(m for m in _run(FAST, 100) if isinstance(m, NewMarket))
    assert message_subject(created) == "feed.sim.market.market_created"
    assert created.message_id == f"sim:{created.cursor}"


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"not json",
        b'{"kind":"alive","producer":"sim","cursor":0,"ts_ms":1}',
        b'{"kind":"alive","producer":"a.b","cursor":1,"ts_ms":1}',
        b'{"kind":"odds_change","producer":"sim","cursor":1,"ts_ms":1,'
        b'"event_id":"e","market_id":"m","prices":[{"selection_id":"a","odds":100}]}',
        b'{"kind":"odds_change","producer":"sim","cursor":1,"ts_ms":1,'
        b'"event_id":"e.1","market_id":"m"}',
        b'{"kind":"surprise","producer":"sim","cursor":1,"ts_ms":1}',
    ],
)
def test_bad_messages_are_refused(data: bytes) -> None:
    with pytest.raises(msgspec.MsgspecError):
        decode_message(data)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(odds_changes_per_s=-1)
    with pytest.raises(ValueError):
        SimulatorConfig(football_events=0, races=0)


def test_cursor_is_the_last_message_yielded() -> None:
    """Actions make several messages at once (a bet stop, a settlement after a
    cancel); `cursor` counts only what was handed out."""
    simulator = Simulator(FAST, epoch_ms=0)
    for _ in range(5_000):
        message = simulator.next()
        assert simulator.cursor == message.cursor
    later = Simulator(FAST, epoch_ms=0, first_cursor=101)
    assert later.cursor == 100
    assert later.next().cursor == 101


@pytest.mark.parametrize("at", [1, 777, 5_003, 12_345])
def test_a_restored_state_continues_the_same_world(at: int) -> None:
    simulator = Simulator(FAST, epoch_ms=1_000)
    for _ in range(at):
        simulator.next()
    data = msgspec.json.encode(simulator.state())
    restored = Simulator.restore(FAST, msgspec.json.decode(data, type=SimulatorState))
    assert restored.cursor == simulator.cursor == at
    assert [restored.next() for _ in range(3_000)] == [simulator.next() for _ in range(3_000)]
    with pytest.raises(ValueError):
        Simulator.restore(dataclasses.replace(FAST, seed=9), simulator.state())


def test_the_state_is_one_tagged_struct_and_an_older_format_is_refused() -> None:
    simulator = Simulator(FAST, epoch_ms=1_000)
    for _ in range(500):
        simulator.next()
    saved = msgspec.json.decode(msgspec.json.encode(simulator.state()))
    assert saved["type"] == "simulator_state/2"
    assert {action["type"] for _, _, action in saved["actions"]} >= {"alive", "tick"}
    # The older format: actions were strings with integers inside, events a list.
    older = {key: value for key, value in saved.items() if key != "type"}
    older["actions"] = [[at, order, "create_football", "0"] for at, order, _ in saved["actions"]]
    older["events"] = list(saved["events"].values())
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(older), type=SimulatorState)
