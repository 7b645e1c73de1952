"""Idempotency, log time, determinism, snapshots and codecs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from ledger_driver import DAY_MS, HOUR_MS, Ledger

from ironbook.core import (
    CASHIER,
    Accepted,
    AdjustBalance,
    AnyCommand,
    BetLeg,
    CloseMarket,
    ContinueResult,
    CreateMarket,
    Deposit,
    LedgerConfig,
    LedgerCorrupted,
    OpenAccount,
    PlaceBet,
    Rejected,
    ResettleMarket,
    ResumeMarket,
    SelectionPrice,
    SelectionSpec,
    SelfExclude,
    SetDepositLimits,
    SettleMarket,
    SuspendMarket,
    UpdatePrices,
    VoidMarket,
    Winner,
    Withdraw,
    acting,
    apply,
    decide,
    decode_command,
    decode_events,
    decode_outcome,
    encode_command,
    encode_events,
    encode_outcome,
    issued,
    new_state,
    partition_of,
    restore_snapshot,
    snapshot_bytes,
    state_hash,
)
from ironbook.core.events import Deposited, MarketResulted, TransactionReply, Withdrawn

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


def deposit(request_id: str, amount_minor: int = 100, account_id: str = "alice") -> Deposit:
    return Deposit(
        request_id=request_id,
        account_id=account_id,
        amount_minor=amount_minor,
        reason="test top-up",
    )


# Idempotency.


def test_retry_returns_the_first_result_and_emits_nothing() -> None:
    ledger = Ledger()
    ledger.open_account("alice")
    first = ledger.submit(deposit("dep-1", 500))
    assert isinstance(first, Accepted)
    hash_after_first = state_hash(ledger.state)
    log_length = len(ledger.log)
    ledger.advance(HOUR_MS)
    again = ledger.submit(deposit("dep-1", 500))
    assert again == Accepted(events=(), result=first.result)
    assert ledger.balance("alice") == 500
    assert len(ledger.log) == log_length
    assert state_hash(ledger.state) == hash_after_first


def test_a_different_command_under_a_seen_request_id_changes_nothing() -> None:
    ledger = Ledger()
    ledger.open_account("alice", 1_000)
    first = ledger.submit(deposit("same", 500))
    again = ledger.submit(Withdraw(request_id="same", account_id="alice", amount_minor=1_000))
    assert isinstance(first, Accepted)
    assert again == Accepted(events=(), result=first.result)
    assert ledger.balance("alice") == 1_500


def test_a_rejection_is_remembered_too() -> None:
    ledger = Ledger()
    ledger.open_account("alice")
    refused = ledger.submit(Withdraw(request_id="wd-1", account_id="alice", amount_minor=300))
    assert isinstance(refused, Rejected)
    assert refused.code == "insufficient_funds"
    assert len(refused.events) == 1
    ledger.ok(deposit("dep-1", 1_000))
    again = ledger.submit(Withdraw(request_id="wd-1", account_id="alice", amount_minor=300))
    assert again == Rejected(code=refused.code, message=refused.message, events=())
    assert ledger.balance("alice") == 1_000


def test_retried_bet_and_settlement_are_not_repeated() -> None:
    ledger = Ledger(LedgerConfig(result_slice_bets=1))
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200, "b": 300})
    bet = PlaceBet(
        request_id="bet-1",
        account_id="alice",
        stake_minor=100,
        legs=(BetLeg(market_id="m1", selection_id="a", odds=200),),
    )
    first_bet = ledger.submit(bet)
    ledger.bet("alice", 100, ("m1", "b", 300))
    assert ledger.submit(bet) == Accepted(events=(), result=first_bet.result)
    assert len(ledger.state.bets) == 2
    ledger.close("m1")
    settle = SettleMarket(request_id="settle-1", market_id="m1", winners=(Winner("a"),))
    first_settle = ledger.submit(settle)
    assert len(first_settle.events) == 1  # the first of two slices, one bet each
    assert sum(isinstance(event, MarketResulted) for event in ledger.log) == 2
    balance = ledger.balance("alice")
    assert ledger.submit(settle) == Accepted(events=(), result=first_settle.result)
    stale = ContinueResult(request_id="slice-again", market_id="m1", cursor=1)
    assert ledger.submit(stale).events == ()
    resettle = ResettleMarket(
        request_id="settle-1", market_id="m1", winners=(Winner("b"),), actor="o", reason="r"
    )
    assert ledger.submit(resettle) == Accepted(events=(), result=first_settle.result)
    assert ledger.balance("alice") == balance == 1_000 - 200 + 200


def test_request_id_is_forgotten_after_the_retention_window_of_log_time() -> None:
    ledger = Ledger(LedgerConfig(idempotency_retention_ms=DAY_MS))
    ledger.open_account("alice")
    ledger.advance(1_000)
    ledger.ok(deposit("dep-1", 100))
    ledger.advance(DAY_MS)
    ledger.ok(deposit("tick-1", 1))  # log time reaches exactly the end of the window
    assert ledger.submit(deposit("dep-1", 100)).events == ()
    ledger.advance(1)
    ledger.ok(deposit("tick-2", 1))  # log time passes it
    assert "dep-1" not in ledger.state.replies
    fresh = ledger.submit(deposit("dep-1", 100))
    assert isinstance(fresh, Accepted)
    assert len(fresh.events) == 1
    assert ledger.balance("alice") == 202
    assert ledger.submit(deposit("dep-1", 100)).events == ()


def test_retention_counts_log_time_not_the_callers_clock() -> None:
    ledger = Ledger(LedgerConfig(idempotency_retention_ms=1_000))
    ledger.open_account("alice")
    ledger.ok(deposit("dep-1", 100))
    # No event has moved log time on, so a caller far in the future still
    # gets the first answer rather than a second deposit.
    assert ledger.submit(deposit("dep-1", 100), now_ms=10 * DAY_MS).events == ()
    assert ledger.balance("alice") == 100


def test_a_refusal_is_forgotten_after_the_window_too() -> None:
    ledger = Ledger(LedgerConfig(idempotency_retention_ms=1_000))
    ledger.open_account("alice")
    assert ledger.refused(Withdraw(request_id="wd", account_id="alice", amount_minor=5)) == (
        "insufficient_funds"
    )
    ledger.ok(deposit("dep", 10))
    ledger.advance(1_001)
    ledger.ok(deposit("tick", 1))
    ledger.ok(Withdraw(request_id="wd", account_id="alice", amount_minor=5))
    assert ledger.balance("alice") == 6


def test_long_runs_keep_recent_ids_and_trim_old_ones() -> None:
    retention_ms = 50
    ledger = Ledger(LedgerConfig(idempotency_retention_ms=retention_ms))
    ledger.open_account("alice")
    for number in range(3_000):
        ledger.advance(1)
        ledger.ok(deposit(f"dep-{number}", 1))
    state = ledger.state
    now_ms = state.now_ms
    live_order = state.reply_order[state.reply_order_head :]
    assert len(state.reply_order) < 3_000  # compacted
    assert all(at_ms >= now_ms - retention_ms for at_ms, _ in live_order)
    assert set(state.replies) == {request_id for _, request_id in live_order}
    assert len(state.replies) == retention_ms + 1
    assert ledger.submit(deposit("dep-2999", 1)).events == ()
    assert ledger.submit(deposit(f"dep-{2_999 - retention_ms}", 1)).events == ()
    assert len(ledger.submit(deposit(f"dep-{2_998 - retention_ms}", 1)).events) == 1
    restored = restore_snapshot(snapshot_bytes(state))
    assert state_hash(restored) == state_hash(state)


# Log time.


def test_log_time_never_goes_backwards() -> None:
    ledger = Ledger()
    ledger.open_account("alice")
    ledger.submit(deposit("d1"), now_ms=5_000)
    assert ledger.state.now_ms == 5_000
    ledger.submit(deposit("d2"), now_ms=1_000)
    late = ledger.log[-1]
    assert isinstance(late, Deposited)
    assert late.at_ms == 5_000
    assert ledger.state.now_ms == 5_000
    ledger.submit(Withdraw(request_id="w1", account_id="alice", amount_minor=10**6), now_ms=0)
    assert ledger.log[-1].at_ms == 5_000
    at = [event.at_ms for event in ledger.log]
    assert at == sorted(at)


def test_a_clock_that_jumps_back_cannot_reopen_a_deposit_window() -> None:
    ledger = Ledger()
    ledger.open_account("alice")
    ledger.ok(SetDepositLimits(request_id="l", account_id="alice", day_minor=100))
    ledger.ok(deposit("d1", 100), now_ms=DAY_MS)
    assert ledger.refused(deposit("d2", 1), now_ms=0) == "deposit_limit_exceeded"


def test_decide_never_mutates_the_state() -> None:
    ledger = scenario()
    before = state_hash(ledger.state)
    for command in every_command_kind():
        decide(ledger.state, issued(command, PEOPLE), ledger.now_ms + DAY_MS)
        assert state_hash(ledger.state) == before, command


# Determinism and snapshots.


def scenario(config: LedgerConfig | None = None) -> Ledger:
    """A ledger that has seen a bit of everything."""
    ledger = Ledger(config or LedgerConfig(result_slice_bets=2))
    ledger.open_account("alice", 5_000)
    ledger.open_account("bob", 5_000)
    ledger.ok(SetDepositLimits(request_id="lim", account_id="bob", day_minor=10_000))
    ledger.ok(SetDepositLimits(request_id="lim2", account_id="bob", day_minor=20_000))
    ledger.create_market("m1", {"a": 250, "b": 300})
    ledger.create_market("m2", {"x": 200, "y": 180})
    ledger.advance(HOUR_MS)
    ledger.ok(
        UpdatePrices(
            request_id="px", market_id="m1", prices=(SelectionPrice(selection_id="a", odds=260),)
        )
    )
    ledger.bet("alice", 1_000, ("m1", "a", 250), policy="better")
    ledger.bet("bob", 700, ("m1", "b", 300))
    ledger.bet("bob", 300, ("m1", "a", 260), ("m2", "x", 200))
    ledger.refused(ledger.bet_command("alice", 1, ("m1", "a", 260)))
    ledger.close("m1")
    ledger.ok(SettleMarket(request_id="s1", market_id="m1", winners=(Winner("a"),)))
    ledger.ok(Withdraw(request_id="w1", account_id="alice", amount_minor=6_000))
    ledger.ok(
        ResettleMarket(
            request_id="rs1", market_id="m1", winners=(Winner("b"),), actor="ops", reason="photo"
        )
    )
    ledger.ok(SelfExclude(request_id="x1", account_id="alice", days=3))
    ledger.advance(DAY_MS)
    return ledger


def every_command_kind() -> list[AnyCommand]:
    leg = BetLeg(market_id="m2", selection_id="x", odds=200)
    return [
        OpenAccount(request_id="n1", account_id="carol"),
        deposit("n2", 100, "bob"),
        Withdraw(request_id="n3", account_id="bob", amount_minor=1),
        AdjustBalance(request_id="n4", account_id="bob", amount_minor=5, actor="o", reason="r"),
        SetDepositLimits(request_id="n5", account_id="bob", week_minor=5),
        SelfExclude(request_id="n6", account_id="bob", days=1),
        CreateMarket(
            request_id="n7",
            market_id="m9",
            event_id="e9",
            name="m9",
            selections=(SelectionSpec(selection_id="a", name="A", odds=200),),
        ),
        UpdatePrices(
            request_id="n8", market_id="m2", prices=(SelectionPrice(selection_id="x", odds=210),)
        ),
        SuspendMarket(request_id="n9", market_id="m2"),
        ResumeMarket(request_id="n10", market_id="m2"),
        CloseMarket(request_id="n11", market_id="m2"),
        SettleMarket(request_id="n12", market_id="m1", winners=(Winner("a", 2),)),
        VoidMarket(request_id="n13", market_id="m1", actor="o", reason="r"),
        ResettleMarket(request_id="n14", market_id="m1", winners=(), actor="o", reason="r"),
        PlaceBet(request_id="n15", account_id="bob", stake_minor=100, legs=(leg,)),
        PlaceBet(request_id="s1", account_id="bob", stake_minor=100, legs=(leg,)),  # a retry
    ]


def replay(events, config: LedgerConfig):
    state = new_state(config)
    for event in events:
        apply(state, event)
    return state


def test_replaying_the_log_from_empty_gives_the_same_state() -> None:
    ledger = scenario()
    replayed = replay(ledger.log, ledger.state.config)
    assert state_hash(replayed) == state_hash(ledger.state)
    assert replayed == ledger.state


def test_replaying_the_encoded_log_gives_the_same_state() -> None:
    ledger = scenario()
    decoded = decode_events(encode_events(ledger.log))
    assert decoded == ledger.log
    assert state_hash(replay(decoded, ledger.state.config)) == state_hash(ledger.state)


def test_state_hash_tells_states_apart() -> None:
    ledger = scenario()
    before = state_hash(ledger.state)
    ledger.ok(deposit("one-more", 1, "bob"))
    assert state_hash(ledger.state) != before
    assert len(before) == 64
    other = scenario(LedgerConfig(result_slice_bets=2, currency="EUR"))
    assert state_hash(other.state) != state_hash(scenario().state)


def test_snapshot_roundtrip_and_continue() -> None:
    ledger = scenario()
    restored = restore_snapshot(snapshot_bytes(ledger.state))
    assert restored == ledger.state
    assert state_hash(restored) == state_hash(ledger.state)
    now_ms = ledger.now_ms + HOUR_MS
    for command in every_command_kind():
        live = decide(ledger.state, issued(command, PEOPLE), now_ms)
        copy = decide(restored, issued(command, PEOPLE), now_ms)
        assert live == copy
        for event in live.events:
            apply(ledger.state, event)
            apply(restored, event)
        assert state_hash(restored) == state_hash(ledger.state)


def test_snapshot_then_tail_equals_full_replay() -> None:
    ledger = scenario()
    middle = len(ledger.log) // 2
    snapshot = snapshot_bytes(replay(ledger.log[:middle], ledger.state.config))
    state = restore_snapshot(snapshot)
    for event in ledger.log[middle:]:
        apply(state, event)
    assert state_hash(state) == state_hash(ledger.state)


def test_state_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    """Python salts str hashes per process: nothing in the state or its
    encoding may depend on that (or on set/dict iteration it affects)."""
    program = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import test_idempotency_and_determinism as t;"
        "from ironbook.core import state_hash;"
        "print(state_hash(t.scenario().state))"
    )
    here = str(Path(__file__).parent)
    expected = state_hash(scenario().state)
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", program, here],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert result.stdout.strip() == expected


def test_snapshot_of_a_new_state_is_stable() -> None:
    assert state_hash(new_state()) == state_hash(new_state())
    assert state_hash(new_state()) != state_hash(new_state(LedgerConfig(partition=1)))


def test_partition_prefixes_the_ids() -> None:
    ledger = Ledger(LedgerConfig(partition=3))
    ledger.open_account("alice", 1_000)
    ledger.create_market("m1", {"a": 200})
    assert ledger.bet("alice", 100, ("m1", "a", 200)).startswith("B3-")


# Codecs.


@pytest.mark.parametrize("command", every_command_kind(), ids=lambda c: type(c).__name__)
def test_command_codec_roundtrip(command: AnyCommand) -> None:
    data = encode_command(command)
    assert decode_command(data) == command
    assert type(decode_command(data)) is type(command)


def test_command_codec_refuses_bad_input() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_command(b"\xc1")
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode({"type": "deposit/1", "request_id": "r"}))
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode({"type": "teleport/1", "request_id": "r"}))
    # Commands travel as arrays: [tag, request_id, account_id, amount_minor,
    # reason, principal].
    unknown_field = ["deposit/1", "r", "a", 5, "why", None, "extra"]
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode(unknown_field))
    wrong_type = ["deposit/1", "r", "a", "5"]
    with pytest.raises(msgspec.ValidationError):
        decode_command(msgspec.msgpack.encode(wrong_type))


def test_command_tags_carry_a_version() -> None:
    for command in every_command_kind():
        tag = msgspec.msgpack.decode(encode_command(command))[0]
        assert tag.split("/")[1].isdigit(), tag


def test_outcome_codec_roundtrip() -> None:
    ledger = scenario()
    accepted = ledger.submit(deposit("enc-1", 5, "bob"))
    rejected = ledger.submit(Withdraw(request_id="enc-2", account_id="bob", amount_minor=10**9))
    assert isinstance(accepted, Accepted)
    assert isinstance(rejected, Rejected)
    assert decode_outcome(encode_outcome(accepted)) == Accepted(events=(), result=accepted.result)
    assert decode_outcome(encode_outcome(rejected)) == Rejected(
        code=rejected.code, message=rejected.message
    )


def test_every_event_kind_roundtrips() -> None:
    ledger = scenario()
    for command in every_command_kind():
        ledger.submit(command)
    kinds = {type(event) for event in ledger.log}
    assert len(kinds) == 12
    assert MarketResulted in kinds
    for event in ledger.log:
        [back] = decode_events(encode_events([event]))
        assert back == event
        assert type(back) is type(event)


# Partitioning.


def test_partition_of_is_stable_and_in_range() -> None:
    assert partition_of("alice", 1) == 0
    assert partition_of("alice", 8) == partition_of("alice", 8)
    assert partition_of("alice", 1_000) == 735  # crc32(b"alice") = 663665735, on every machine
    seen = {partition_of(f"player-{number}", 8) for number in range(400)}
    assert seen == set(range(8))
    with pytest.raises(ValueError):
        partition_of("alice", 0)


# apply's guards: an event that breaks the books is a bug upstream, and says so.


def test_apply_refuses_postings_that_do_not_balance() -> None:
    ledger = Ledger()
    ledger.open_account("alice")
    forged = Deposited(
        request_id="forged",
        at_ms=0,
        postings=(("alice", 100), (CASHIER, -99)),
        account_id="alice",
        amount_minor=100,
        transaction_id="T0-99",
        reply=TransactionReply(account_id="alice", balance_minor=100, transaction_id="T0-99"),
    )
    with pytest.raises(LedgerCorrupted, match="sum to 1"):
        apply(ledger.state, forged)


def test_apply_refuses_a_player_going_negative() -> None:
    ledger = Ledger()
    ledger.open_account("alice", 50)
    forged = Withdrawn(
        request_id="forged",
        at_ms=0,
        postings=(("alice", -100), (CASHIER, 100)),
        account_id="alice",
        amount_minor=100,
        transaction_id="T0-99",
        reply=TransactionReply(account_id="alice", balance_minor=-50, transaction_id="T0-99"),
    )
    with pytest.raises(LedgerCorrupted, match="negative"):
        apply(ledger.state, forged)
