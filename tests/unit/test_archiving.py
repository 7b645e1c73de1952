"""Archiving: a market final for longer than the bet retention window leaves
the state with its bets, its final views kept by the log; results are
refused once the resettlement window is over."""

from __future__ import annotations

import msgspec
import pytest
from ledger_driver import DAY_MS, Ledger

from ironbook.core import (
    Accepted,
    ArchiveReply,
    ArchiveSettled,
    GetBet,
    GetMarket,
    LedgerConfig,
    Rejected,
    ResettleMarket,
    RollbackSettlement,
    SettledArchived,
    SettleMarket,
    VoidMarket,
    Winner,
    apply,
    archive_due,
    check_invariants,
    decide,
    issued,
    new_state,
    restore_snapshot,
    snapshot_bytes,
    state_hash,
)
from ironbook.core.archiving import MAX_ARCHIVED
from ironbook.core.events import BetView, MarketView
from ironbook.core.principal import acting
from ironbook.core.views import ReadRefusal

WINDOW_MS = 7 * DAY_MS
RETENTION_MS = 14 * DAY_MS
READER = acting("test")


def make_ledger() -> Ledger:
    ledger = Ledger(LedgerConfig(resettle_window_ms=WINDOW_MS, bet_retention_ms=RETENTION_MS))
    ledger.open_account("alice", 100_000)
    ledger.open_account("bob", 100_000)
    ledger.create_market("m1", {"a": 250, "b": 300})
    ledger.create_market("m2", {"x": 200, "y": 180})
    return ledger


def settle(ledger: Ledger, market_id: str, winner: str, at_ms: int) -> None:
    ledger.close(market_id)
    ledger.ok(
        SettleMarket(
            request_id=ledger.request_id(), market_id=market_id, winners=(Winner(winner),)
        ),
        now_ms=at_ms,
    )


def archive(ledger: Ledger, at_ms: int) -> tuple[ArchiveReply, list[SettledArchived]]:
    logged = len(ledger.log)
    reply = ledger.ok(ArchiveSettled(request_id=ledger.request_id()), now_ms=at_ms)
    assert isinstance(reply, ArchiveReply)
    events = ledger.log[logged:]
    assert all(isinstance(event, SettledArchived) for event in events)
    assert check_invariants(ledger.state) == []
    return reply, [event for event in events if isinstance(event, SettledArchived)]


def read(ledger: Ledger, query: GetBet | GetMarket) -> object:
    outcome = decide(ledger.state, issued(query, READER), ledger.state.now_ms)
    assert isinstance(outcome, Accepted)
    result = outcome.result
    return result.code if isinstance(result, ReadRefusal) else result


def balances(ledger: Ledger) -> dict[str, int]:
    return {k: a.balance_minor for k, a in ledger.state.accounts.items()}


def test_a_market_leaves_with_its_bets_a_retention_window_after_its_result() -> None:
    ledger = make_ledger()
    won = ledger.bet("alice", 1_000, ("m1", "a", 250))
    lost = ledger.bet("bob", 500, ("m1", "b", 300))
    settle(ledger, "m1", "a", at_ms=0)
    views = {bet_id: read(ledger, GetBet(request_id="q", bet_id=bet_id)) for bet_id in (won, lost)}
    market_view = read(ledger, GetMarket(request_id="q", market_id="m1"))
    money = balances(ledger)

    assert not archive_due(ledger.state, RETENTION_MS - 1)
    assert archive(ledger, RETENTION_MS - 1) == (ArchiveReply(markets=0, bets=0), [])
    assert archive_due(ledger.state, RETENTION_MS)
    reply, [event] = archive(ledger, RETENTION_MS)

    assert reply == ArchiveReply(markets=1, bets=2)
    assert {view.bet_id: view for view in event.bets} == views
    assert event.markets == (market_view,)
    assert "m1" not in ledger.state.markets and "m2" in ledger.state.markets
    assert won not in ledger.state.bets and lost not in ledger.state.bets
    assert (ledger.state.archived_markets, ledger.state.archived_bets) == (1, 2)
    assert balances(ledger) == money, "archiving moves no money"
    assert event.postings == ()
    assert read(ledger, GetBet(request_id="q", bet_id=won)) == "unknown_bet"
    assert not archive_due(ledger.state, 10 * RETENTION_MS)


def test_a_market_waits_while_an_accumulator_on_it_has_a_leg_on_a_later_market() -> None:
    ledger = make_ledger()
    double = ledger.bet("alice", 1_000, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "a", at_ms=0)
    settle(ledger, "m2", "x", at_ms=10 * DAY_MS)

    reply, [event] = archive(ledger, RETENTION_MS)
    assert reply == ArchiveReply(markets=0, bets=0)
    # m1 waits for m2, the double's other market, to be past retention too.
    m2_due_ms = 10 * DAY_MS + RETENTION_MS
    assert event.deferred == ((m2_due_ms, "m1"),)
    assert "m1" in ledger.state.markets and double in ledger.state.bets
    assert ledger.state.archive_queue == [(m2_due_ms, "m1"), (m2_due_ms, "m2")]

    reply, _ = archive(ledger, m2_due_ms)
    assert reply == ArchiveReply(markets=2, bets=1), "both go, and the double with them"
    assert ledger.state.markets == {} and ledger.state.archive_queue == []


def test_an_open_bet_keeps_its_market() -> None:
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "a", at_ms=0)
    _, [event] = archive(ledger, RETENTION_MS)
    assert event.deferred == ((2 * RETENTION_MS, "m1"),), "a retention window later"
    assert set(ledger.state.markets) == {"m1", "m2"}


def test_a_big_market_is_archived_over_several_events() -> None:
    ledger = make_ledger()
    bet_ids = [ledger.bet("alice" if n % 2 else "bob", 10, ("m1", "a", 250)) for n in range(1_200)]
    settle(ledger, "m1", "b", at_ms=0)

    archived: list[BetView] = []
    markets: list[MarketView] = []
    replies = []
    while archive_due(ledger.state, RETENTION_MS):
        reply, [event] = archive(ledger, RETENTION_MS)
        replies.append(reply)
        assert len(event.bets) + len(event.markets) <= MAX_ARCHIVED
        archived.extend(event.bets)
        markets.extend(event.markets)
        if event.continued:
            assert ledger.state.archiving == "m1" and "m1" in ledger.state.markets
    assert replies == [
        ArchiveReply(markets=0, bets=500),
        ArchiveReply(markets=0, bets=500),
        ArchiveReply(markets=1, bets=200),
    ]
    assert [view.bet_id for view in archived] == bet_ids
    assert [view.market_id for view in markets] == ["m1"]
    assert ledger.state.archiving == "" and ledger.state.bets == {}


@pytest.mark.parametrize("command", ["resettle", "rollback", "void"])
def test_results_are_refused_once_the_resettlement_window_is_over(command: str) -> None:
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a", at_ms=0)
    commands = {
        "resettle": ResettleMarket(
            request_id="again",
            market_id="m1",
            winners=(Winner("b"),),
            actor="ops",
            reason="stewards",
        ),
        "rollback": RollbackSettlement(
            request_id="again", market_id="m1", actor="ops", reason="stewards"
        ),
        "void": VoidMarket(request_id="again", market_id="m1", actor="ops", reason="stewards"),
    }
    money = balances(ledger)
    outcome = ledger.submit(commands[command], now_ms=WINDOW_MS + 1)
    assert isinstance(outcome, Rejected)
    assert outcome.code == "resettle_window_closed"
    assert "7 days" in outcome.message
    assert balances(ledger) == money


def test_a_resettlement_restarts_both_windows() -> None:
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a", at_ms=0)
    ledger.ok(
        ResettleMarket(
            request_id=ledger.request_id(),
            market_id="m1",
            winners=(Winner("b"),),
            actor="ops",
            reason="stewards",
        ),
        now_ms=WINDOW_MS,
    )
    assert ledger.state.markets["m1"].final_ms == WINDOW_MS
    reply, [event] = archive(ledger, RETENTION_MS)
    assert reply == ArchiveReply(markets=0, bets=0), "the first result's entry is stale"
    assert event.consumed == 1 and not event.deferred
    reply, _ = archive(ledger, WINDOW_MS + RETENTION_MS)
    assert reply == ArchiveReply(markets=1, bets=1)


def test_a_rollback_clears_the_final_time() -> None:
    ledger = make_ledger()
    settle(ledger, "m1", "a", at_ms=0)
    ledger.ok(
        RollbackSettlement(request_id=ledger.request_id(), market_id="m1", actor="o", reason="r"),
        now_ms=DAY_MS,
    )
    assert ledger.state.markets["m1"].final_ms is None
    _, [event] = archive(ledger, RETENTION_MS)
    assert event.consumed == 1 and not event.markets and "m1" in ledger.state.markets


def test_an_archived_market_can_no_longer_be_resulted() -> None:
    ledger = make_ledger()
    settle(ledger, "m1", "a", at_ms=0)
    archive(ledger, RETENTION_MS)
    outcome = ledger.submit(
        RollbackSettlement(request_id="late", market_id="m1", actor="ops", reason="late"),
        now_ms=RETENTION_MS + 1,
    )
    assert isinstance(outcome, Rejected)
    assert outcome.code == "unknown_market"
    assert "archived" in outcome.message


def test_archived_state_survives_a_snapshot_and_a_replay() -> None:
    ledger = make_ledger()
    for _ in range(600):
        ledger.bet("alice", 10, ("m1", "a", 250))
    ledger.bet("bob", 10, ("m1", "a", 250), ("m2", "x", 200))
    settle(ledger, "m1", "a", at_ms=0)
    settle(ledger, "m2", "y", at_ms=0)
    archive(ledger, RETENTION_MS)  # half way through m1
    assert ledger.state.archiving == "m1"
    copy = restore_snapshot(snapshot_bytes(ledger.state))
    assert state_hash(copy) == state_hash(ledger.state)
    assert copy.archive_queue == ledger.state.archive_queue
    replayed = new_state(ledger.state.config)
    for event in ledger.log:
        apply(replayed, event)
    assert state_hash(replayed) == state_hash(ledger.state)


def test_a_snapshot_from_before_archiving_still_loads() -> None:
    """Its state, markets and config lack the trailing fields archiving
    added: they take their defaults (no final time, nothing queued)."""
    ledger = make_ledger()
    ledger.bet("alice", 1_000, ("m1", "a", 250))
    settle(ledger, "m1", "a", at_ms=0)
    raw = msgspec.msgpack.decode(snapshot_bytes(ledger.state))
    del raw[-4:]  # archive_queue, archiving, archived_markets, archived_bets
    del raw[0][-2:]  # resettle_window_ms, bet_retention_ms
    for market in raw[2].values():
        del market[-1]  # final_ms
    state = restore_snapshot(msgspec.msgpack.encode(raw))
    assert state.archive_queue == [] and state.markets["m1"].final_ms is None
    assert state.config.bet_retention_ms == LedgerConfig().bet_retention_ms
    assert state.bets.keys() == ledger.state.bets.keys()
    assert check_invariants(state) == []


def test_the_archive_run_also_ends_expired_idempotency_memory() -> None:
    """Replies are forgotten once older than the idempotency window whenever
    a new one is remembered; on a ledger where nothing new arrives, the
    leader's archive run forgets them too."""
    ledger = make_ledger()
    settle(ledger, "m1", "a", at_ms=0)
    assert ledger.state.replies
    archive(ledger, RETENTION_MS)
    assert ledger.state.replies == {}


def test_retention_must_outlast_the_resettlement_window() -> None:
    with pytest.raises(ValueError, match="must be longer than the resettlement window"):
        LedgerConfig(resettle_window_ms=RETENTION_MS, bet_retention_ms=RETENTION_MS)
