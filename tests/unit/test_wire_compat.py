"""The new commands, events and replies round-trip through the codecs, and
logs and snapshots written before them still decode (new fields are trailing,
with defaults)."""

from __future__ import annotations

import msgspec
import pytest
from ledger_driver import Ledger

from ironbook.core import (
    Accepted,
    AnyCommand,
    BetLeg,
    CreateMarket,
    FeedBatch,
    FeedMarket,
    GetFeedCursor,
    LedgerConfig,
    PlaceBet,
    ReleaseBets,
    RollbackSettlement,
    SelectionPrice,
    SelectionSpec,
    SetProducerStatus,
    SettleMarket,
    VoidMarket,
    Winner,
    acting,
    decide,
    decode_command,
    decode_events,
    decode_outcome,
    encode_command,
    encode_events,
    encode_outcome,
    issued,
    restore_snapshot,
    snapshot_bytes,
    state_hash,
)
from ironbook.core.events import (
    BetPlaced,
    BetsReleased,
    FeedApplied,
    MarketCreated,
    MarketResulted,
    ProducerStatusChanged,
)

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


SPEC = SelectionSpec(selection_id="a", name="A", odds=200)


def new_commands() -> list[AnyCommand]:
    return [
        FeedBatch(
            request_id="f1",
            producer="lsports",
            to_cursor=9,
            markets=(
                FeedMarket(
                    market_id="fm",
                    seq=3,
                    event_id="e",
                    name="n",
                    selections=(SPEC,),
                    in_play=True,
                    bet_delay_s=5,
                    status="open",
                    prices=(SelectionPrice(selection_id="a", odds=210),),
                ),
                FeedMarket(market_id="fm", seq=9, status="suspended"),
            ),
        ),
        SetProducerStatus(request_id="p1", producer="lsports", down=True),
        SetProducerStatus(request_id="p2", producer="lsports", down=False),
        CreateMarket(
            request_id="c1",
            market_id="m1",
            event_id="e",
            name="n",
            selections=(SPEC,),
            in_play=True,
            bet_delay_s=2,
            producer="lsports",
        ),
        PlaceBet(
            request_id="b1",
            account_id="alice",
            stake_minor=100,
            legs=(BetLeg(market_id="m1", selection_id="a", odds=200),),
            price_change="better",
        ),
        ReleaseBets(request_id="r1"),
        VoidMarket(
            request_id="v1",
            market_id="fm",
            actor="o",
            reason="r",
            placed_from_ms=0,
            placed_to_ms=1,
        ),
        SettleMarket(request_id="s1", market_id="fm", winners=(Winner("a"),)),
        RollbackSettlement(request_id="rb1", market_id="fm", actor="o", reason="r"),
        GetFeedCursor(request_id="q1", producer="lsports"),  # type: ignore[list-item]
    ]


@pytest.mark.parametrize("command", new_commands(), ids=lambda c: type(c).__name__)
def test_new_commands_roundtrip(command: AnyCommand) -> None:
    data = encode_command(command)
    back = decode_command(data)
    assert back == command
    assert type(back) is type(command)
    assert msgspec.msgpack.decode(data)[0].endswith(
        "/2" if isinstance(command, CreateMarket | PlaceBet) else "/1"
    )


def test_every_new_event_and_reply_roundtrips() -> None:
    ledger = Ledger(now_ms=1_000)
    ledger.open_account("alice", 1_000)
    outcomes = []
    for command in new_commands():
        if isinstance(command, ReleaseBets | SettleMarket):
            ledger.advance(2_000)
        if isinstance(command, SettleMarket):
            ledger.close("fm")
        outcomes.append(ledger.submit(command))
    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    kinds = {type(event) for event in ledger.log}
    assert {FeedApplied, ProducerStatusChanged, BetsReleased, MarketResulted} <= kinds
    for event in ledger.log:
        [back] = decode_events(encode_events([event]))
        assert back == event
        assert type(back) is type(event)
    for outcome in outcomes:
        assert isinstance(outcome, Accepted)
        assert decode_outcome(encode_outcome(outcome)) == Accepted(events=(), result=outcome.result)
    state = restore_snapshot(snapshot_bytes(ledger.state))
    assert snapshot_bytes(state) == snapshot_bytes(ledger.state)


def test_events_logged_before_the_new_fields_still_decode() -> None:
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200})
    ledger.bet("alice", 100, ("m1", "a", 200))
    created = next(e for e in ledger.log if isinstance(e, MarketCreated))
    placed = next(e for e in ledger.log if isinstance(e, BetPlaced))
    # The old encodings: the same arrays without the trailing fields (each-way
    # terms; then the actor and reason).
    old_created = msgspec.msgpack.decode(encode_events([created]))[0][:-3]
    old_placed = msgspec.msgpack.decode(encode_events([placed]))[0][:-3]
    [back_created, back_placed] = decode_events(msgspec.msgpack.encode([old_created, old_placed]))
    assert back_created == msgspec.structs.replace(created, actor="", reason="")
    assert back_placed == msgspec.structs.replace(placed, actor="")


def test_a_snapshot_written_before_the_new_fields_restores() -> None:
    ledger = Ledger(LedgerConfig())
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200})
    ledger.bet("alice", 100, ("m1", "a", 200))
    raw = msgspec.msgpack.decode(snapshot_bytes(ledger.state))
    old_state = raw[:-3]  # no feed cursors, producers down or held bets
    old_state[0] = old_state[0][:-1]  # config without the market liability cap
    market = old_state[2]["m1"]
    old_state[2]["m1"] = market[:-2]  # market without producer and max liability
    for bet_id, bet in old_state[3].items():
        old_state[3][bet_id] = bet[:-2]
    state = restore_snapshot(msgspec.msgpack.encode(old_state))
    assert state.feed_cursors == {}
    assert state.pending_bets == []
    assert state.config.max_market_liability_minor == 500_000_000
    assert state.bets["B0-1"].price_change == "none"
    assert state.markets["m1"].max_liability_minor == 100
    assert state.markets["m1"].producer == ""


def test_deciding_the_new_commands_never_mutates_the_state() -> None:
    ledger = Ledger(now_ms=1_000)
    ledger.open_account("alice", 1_000)
    commands = new_commands()
    for command in commands[:5]:  # a feed market, an in-play market, a held bet
        ledger.submit(command)
    assert ledger.state.pending_bets
    before = state_hash(ledger.state)
    for command in commands:
        for now_ms in (ledger.now_ms, ledger.now_ms + 60_000):
            decide(ledger.state, issued(command, PEOPLE), now_ms)
            assert state_hash(ledger.state) == before, command


def test_commands_of_the_first_versions_still_decode_and_decide_the_same() -> None:
    """A client (or a log) from before each-way and ladders sends
    `place_bet/1` and `create_market/1` with hundredths: they decode as
    win-only bets on exchange-ladder markets."""
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    old_market = ["create_market/1", "c1", "m1", "e", "n", [["a", "A", 250]], False, 0, ""]
    created = decode_command(msgspec.msgpack.encode(old_market))
    assert isinstance(created, CreateMarket)
    assert created.ladder.kind == "exchange" and created.place_terms is None
    ledger.ok(created)  # type: ignore[arg-type]
    old_bet = ["place_bet/1", "b1", "alice", 100, [["m1", "a", 250]], "none"]
    bet = decode_command(msgspec.msgpack.encode(old_bet))
    assert isinstance(bet, PlaceBet) and not bet.each_way
    reply = ledger.ok(bet)  # type: ignore[arg-type]
    assert reply.potential_payout_minor == 250  # type: ignore[union-attr]
    assert ledger.balance("alice") == 900
