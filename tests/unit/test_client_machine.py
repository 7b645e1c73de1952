"""The ledger client's state machine, driven by hand: what it sends, when it
wakes, and what each submit ends with."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironbook import core
from ironbook.core.events import AccountReply, FeedReply, SettlementReply
from ironbook.replication.client import (
    BadRequest,
    BatchConfig,
    ClientConfig,
    ClientMachine,
    FailureReason,
    GaveUp,
    Resolved,
    Send,
    Step,
)
from ironbook.replication.wire import BadRequestReply, OutcomeReply, RetryReply, encode_reply

CONFIG = ClientConfig(
    request_timeout_ms=100, deadline_ms=1_000, backoff_initial_ms=10, backoff_max_ms=80
)
FAILURES: tuple[FailureReason, ...] = ("timeout", "no_responders", "transport", "malformed")


def machine(
    *, partitions: int = 1, config: ClientConfig = CONFIG, batching: BatchConfig | None = None
) -> ClientMachine:
    return ClientMachine(
        partitions=partitions,
        config=config,
        batching=batching or BatchConfig(),
        rng=random.Random(7),
    )


def deposit(n: int, account: str = "alice") -> core.Deposit:
    return core.Deposit(
        request_id=f"r{n}", account_id=account, amount_minor=100, reason="test top-up"
    )


def accepted(result: object = None) -> bytes:
    reply = result or AccountReply(account_id="alice", balance_minor=100)
    outcome = core.Accepted(events=(), result=reply)  # type: ignore[arg-type]
    return encode_reply(OutcomeReply(outcome=core.encode_outcome(outcome)))


def rejected(code: str) -> bytes:
    outcome = core.Rejected(code=code, message=code)
    return encode_reply(OutcomeReply(outcome=core.encode_outcome(outcome)))


def only_send(step: Step) -> Send:
    assert len(step.sends) == 1, step.sends
    return step.sends[0]


def test_an_outcome_resolves_the_submit() -> None:
    m = machine()
    ticket = m.submit(deposit(1), 0)
    send = only_send(m.poll(0))
    assert send.payloads == (core.encode_command(deposit(1)),)
    assert send.timeout_ms == CONFIG.request_timeout_ms
    m.reply_received(send.request_no, [accepted()], 5)
    step = m.poll(5)
    assert step.resolved == (
        Resolved(
            ticket,
            core.Accepted(events=(), result=AccountReply(account_id="alice", balance_minor=100)),
        ),
    )
    assert not step.sends and step.wake_at_ms is None and m.open_submits == 0


@settings(max_examples=60, deadline=None)
@given(
    failures=st.lists(st.sampled_from((*FAILURES, "retry", "garbage")), min_size=1, max_size=40),
    seed=st.integers(0, 2**32),
)
def test_every_retry_resends_the_same_bytes_within_backoff_and_deadline(
    failures: list[str], seed: int
) -> None:
    m = ClientMachine(partitions=1, config=CONFIG, batching=BatchConfig(), rng=random.Random(seed))
    command = deposit(1)
    ticket = m.submit(command, 0)
    now_ms = 0
    sent: list[Send] = []
    backoff_ms = CONFIG.backoff_initial_ms
    retry_by_ms = 0
    resolved: list[Resolved] = []
    script = iter(failures)
    while not resolved:
        step = m.poll(now_ms)
        resolved.extend(step.resolved)
        if resolved:
            break
        if not step.sends:
            # Woken no later than the backoff allows, nor past the deadline.
            assert step.wake_at_ms is not None
            assert now_ms < step.wake_at_ms <= min(retry_by_ms, CONFIG.deadline_ms)
            now_ms = step.wake_at_ms
            continue
        send = only_send(step)
        sent.append(send)
        assert send.timeout_ms <= CONFIG.deadline_ms - now_ms
        failure = next(script, "timeout")
        now_ms += send.timeout_ms if failure == "timeout" else 1
        if failure == "retry":
            m.reply_received(send.request_no, [encode_reply(RetryReply("aborted"))], now_ms)
        elif failure == "garbage":
            m.reply_received(send.request_no, [b"\xc1"], now_ms)
        else:
            m.request_failed(send.request_no, failure, now_ms)  # type: ignore[arg-type]
        retry_by_ms = now_ms + backoff_ms
        backoff_ms = min(backoff_ms * 2, CONFIG.backoff_max_ms)
    assert {send.payloads for send in sent} == {(core.encode_command(command),)}
    # Given up exactly at the deadline, never before.
    assert now_ms == CONFIG.deadline_ms
    assert [(r.ticket, type(r.result)) for r in resolved] == [(ticket, GaveUp)]
    assert m.attempts == len(sent) == sum(m.resends.values())


def test_a_submit_in_flight_gives_up_at_its_deadline() -> None:
    m = machine(config=ClientConfig(request_timeout_ms=5_000, deadline_ms=300))
    ticket = m.submit(deposit(1), 0)
    send = only_send(m.poll(0))
    assert send.timeout_ms == 300  # no reply is waited for past the deadline
    assert m.poll(299).resolved == ()
    assert m.poll(299).wake_at_ms == 300
    (gave_up,) = m.poll(300).resolved
    assert gave_up.ticket == ticket and isinstance(gave_up.result, GaveUp)
    # A late outcome changes nothing.
    m.reply_received(send.request_no, [accepted()], 301)
    assert m.poll(301) == Step(sends=(), resolved=(), wake_at_ms=None)


def test_a_bad_request_is_answered_at_once_and_never_resent() -> None:
    m = machine()
    ticket = m.submit(deposit(1), 0)
    send = only_send(m.poll(0))
    m.reply_received(send.request_no, [encode_reply(BadRequestReply("cannot decode"))], 1)
    step = m.poll(1)
    (done,) = step.resolved
    assert done.ticket == ticket and isinstance(done.result, BadRequest)
    assert "cannot decode" in str(done.result)
    assert not step.sends and step.wake_at_ms is None
    assert m.poll(10_000).sends == ()
    assert m.attempts == 1 and not m.resends


@settings(max_examples=50, deadline=None)
@given(
    submits=st.integers(1, 60),
    max_batch=st.integers(1, 8),
    max_inflight=st.integers(1, 4),
    outcomes=st.lists(st.booleans(), min_size=1, max_size=200),
)
def test_batches_respect_both_caps_and_every_submit_ends(
    submits: int, max_batch: int, max_inflight: int, outcomes: list[bool]
) -> None:
    m = machine(
        batching=BatchConfig(max_batch_commands=max_batch, max_inflight_batches=max_inflight)
    )
    tickets = {m.submit(deposit(n, f"acct-{n % 5}"), 0) for n in range(submits)}
    in_flight: list[Send] = []
    resolved: set[int] = set()
    now_ms = 0
    turn = 0
    while len(resolved) < submits:
        step = m.poll(now_ms)
        resolved.update(r.ticket for r in step.resolved)
        for send in step.sends:
            assert 1 <= len(send.payloads) <= max_batch
        in_flight.extend(step.sends)
        assert len(in_flight) <= max_inflight
        if in_flight:
            send = in_flight.pop(0)
            now_ms += 1
            if outcomes[turn % len(outcomes)]:
                m.reply_received(send.request_no, [accepted()] * len(send.payloads), now_ms)
            else:
                m.request_failed(send.request_no, "timeout", now_ms)
            turn += 1
        elif step.wake_at_ms is not None:
            now_ms = max(now_ms, step.wake_at_ms)
        else:
            assert len(resolved) == submits
    assert resolved == tickets
    assert now_ms <= CONFIG.deadline_ms + submits


def test_commands_waiting_for_a_slot_travel_together() -> None:
    m = machine(batching=BatchConfig(max_batch_commands=3, max_inflight_batches=1))
    m.submit(deposit(0), 0)
    first = only_send(m.poll(0))
    for n in range(1, 6):
        m.submit(deposit(n), 1)
    assert m.poll(1).sends == ()  # the one slot is taken
    m.reply_received(first.request_no, [accepted()], 2)
    second = only_send(m.poll(2))
    assert second.payloads == tuple(core.encode_command(deposit(n)) for n in (1, 2, 3))
    assert m.requests == 2 and m.attempts == 4


def test_a_short_reply_resends_the_whole_batch() -> None:
    m = machine()
    m.submit(deposit(1), 0)
    m.submit(deposit(2), 0)
    send = only_send(m.poll(0))
    m.reply_received(send.request_no, [accepted()], 1)  # one reply for two commands
    assert m.resends == {"malformed": 2}
    assert m.poll(1).resolved == ()


def test_a_retry_reply_resends_only_that_command() -> None:
    m = machine()
    first = m.submit(deposit(1), 0)
    m.submit(deposit(2), 0)
    send = only_send(m.poll(0))
    m.reply_received(
        send.request_no, [accepted(), encode_reply(RetryReply(reason="overloaded"))], 1
    )
    step = m.poll(1)
    assert [r.ticket for r in step.resolved] == [first]
    assert m.resends == {"retry:overloaded": 1}
    assert step.wake_at_ms is not None
    resend = only_send(m.poll(step.wake_at_ms))
    assert resend.payloads == (core.encode_command(deposit(2)),)


def test_a_cancelled_submit_is_not_sent() -> None:
    m = machine()
    ticket = m.submit(deposit(1), 0)
    m.cancel(ticket)
    assert m.poll(0) == Step(sends=(), resolved=(), wake_at_ms=None)


def test_routing_by_account_query_and_partition() -> None:
    m = machine(partitions=4)
    m.submit(deposit(1, "alice"), 0)
    m.submit(core.GetAccount(request_id="q1", account_id="bob"), 0)
    m.submit_to(2, core.ReleaseBets(request_id="rb"), 0)
    partitions = sorted(send.partition for send in m.poll(0).sends)
    assert partitions == sorted([core.partition_of("alice", 4), core.partition_of("bob", 4), 2])
    with pytest.raises(ValueError, match="submit_to"):
        m.submit(core.ReleaseBets(request_id="rb2"), 0)
    with pytest.raises(ValueError, match=r"not in 0\.\.3"):
        m.submit_to(4, deposit(2), 0)


def _broadcast(m: ClientMachine, command: core.AnyCommand, replies: list[bytes]) -> Resolved:
    ticket = m.submit(command, 0)
    sends = m.poll(0).sends
    assert sorted(send.partition for send in sends) == list(range(m.partitions))
    for send in sends:
        m.reply_received(send.request_no, [replies[send.partition]], 1)
    (done,) = m.poll(1).resolved
    assert done.ticket == ticket
    return done


def test_settlements_of_every_partition_are_summed() -> None:
    m = machine(partitions=3)
    settle = core.SettleMarket(
        request_id="s1", market_id="m1", winners=(core.Winner(selection_id="home"),)
    )
    replies = [
        accepted(
            SettlementReply(market_id="m1", status="settled", bets_affected=n, paid_minor=100 * n)
        )
        for n in (1, 2, 4)
    ]
    done = _broadcast(m, settle, replies)
    assert isinstance(done.result, core.Accepted)
    assert done.result.result == SettlementReply(
        market_id="m1", status="settled", bets_affected=7, paid_minor=700
    )


def test_a_feed_batch_reports_the_cursor_every_partition_reached() -> None:
    m = machine(partitions=3)
    batch = core.FeedBatch(request_id="f1", producer="p", to_cursor=9, markets=())
    replies = [
        accepted(FeedReply(producer="p", cursor=cursor, applied=applied, skipped=0))
        for cursor, applied in ((9, 3), (7, 5), (9, 1))
    ]
    done = _broadcast(m, batch, replies)
    assert isinstance(done.result, core.Accepted)
    assert done.result.result == FeedReply(producer="p", cursor=7, applied=5, skipped=0)


def test_one_partitions_rejection_is_the_outcome() -> None:
    m = machine(partitions=3)
    suspend = core.SuspendMarket(request_id="x1", market_id="m1")
    replies = [accepted(), rejected("unknown_market"), rejected("other")]
    done = _broadcast(m, suspend, replies)
    assert isinstance(done.result, core.Rejected) and done.result.code == "unknown_market"


def test_a_broadcast_waits_for_the_slow_partition_and_retries_only_it() -> None:
    m = machine(partitions=2)
    ticket = m.submit(core.SuspendMarket(request_id="x1", market_id="m1"), 0)
    sends = {send.partition: send for send in m.poll(0).sends}
    m.reply_received(sends[0].request_no, [accepted()], 1)
    m.request_failed(sends[1].request_no, "no_responders", 1)
    step = m.poll(1)
    assert step.resolved == () and step.wake_at_ms is not None
    resend = only_send(m.poll(step.wake_at_ms))
    assert resend.partition == 1
    m.reply_received(resend.request_no, [accepted()], step.wake_at_ms + 1)
    assert [r.ticket for r in m.poll(step.wake_at_ms + 1).resolved] == [ticket]
