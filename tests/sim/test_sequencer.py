"""The leader loop in isolation, on virtual time, against the simulated log."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Sequence

import msgspec
import pytest

from ironbook import core
from ironbook.core import acting, issued
from ironbook.replication.batch import ReplayState, admit, decode_batch, encode_signed_batch
from ironbook.replication.concurrency import race
from ironbook.replication.errors import Superseded
from ironbook.replication.families import Family, family_of
from ironbook.replication.interfaces import AppendUnknown, Fenced, InboundRequest, LogEntry
from ironbook.replication.merkle import Frontier, leaf_hash, log_tag
from ironbook.replication.sequencer import Sequencer, SequencerConfig
from ironbook.replication.sim.clock import SimClock
from ironbook.replication.sim.host import Host
from ironbook.replication.sim.log import LogService, SimLog
from ironbook.replication.sim.loop import VirtualTimeLoop, run_virtual
from ironbook.replication.sim.network import Network
from ironbook.replication.sim.signing import MacSigner
from ironbook.replication.tree_keeping import LogTree
from ironbook.replication.wire import (
    BadRequestReply,
    CommandReply,
    OutcomeReply,
    RetryReply,
    decode_reply,
)

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


SIGNER = MacSigner(b"test replicas' key")


class Request:
    def __init__(self, payload: bytes, service: LogService, family: Family | None = None) -> None:
        """`family`: of the subject it came on; by default, the command's own."""
        self.payload = payload
        self.family: Family = family or _family_of_payload(payload)
        self._service = service
        self.replies: list[CommandReply] = []
        self.durable_when_answered: list[bool] = []

    async def respond(self, payload: bytes) -> None:
        self.replies.append(decode_reply(payload))
        self.durable_when_answered.append(self._in_log())

    def _in_log(self) -> bool:
        try:
            request_id = core.decode_command(self.payload).request_id
        except msgspec.MsgspecError:
            return False
        tip_batch_id = ""
        for entry in self._service.entries:
            events = admit(entry, tip_batch_id, SIGNER).events
            if events is None:
                continue
            tip_batch_id = entry.batch_id
            if any(event.request_id == request_id for event in events):
                return True
        return False


def _family_of_payload(payload: bytes) -> Family:
    try:
        return family_of(core.decode_command(payload))
    except msgspec.MsgspecError:
        return "query"


class Inbox:
    def __init__(self, requests: Sequence[Request]) -> None:
        self.queue: deque[Request] = deque(requests)

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[InboundRequest]:
        if not self.queue:
            await asyncio.sleep(wait_ms / 1000)
            return []
        return [self.queue.popleft() for _ in range(min(max_requests, len(self.queue)))]

    async def close(self) -> None:
        self.queue.clear()


class Setup:
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop
        self.service = LogService(loop, now_ms=loop.now_ms, dedupe_window_ms=120_000)
        self.host = Host("leader", 1)
        self.network = Network(loop, random.Random(7))
        self.log = SimLog(
            self.service, self.network, self.host, now_ms=loop.now_ms, request_timeout_ms=100
        )
        self.clock = SimClock(loop, self.host)

    def requests(self, commands: Sequence[core.AnyCommand | bytes]) -> list[Request]:
        return [
            Request(
                c if isinstance(c, bytes) else core.encode_command(issued(c, PEOPLE)),
                self.service,
            )
            for c in commands
        ]

    def sequencer(
        self,
        inbox: Inbox,
        config: SequencerConfig,
        *,
        lease_current: bool = True,
        **log: object,
    ) -> Sequencer:
        return Sequencer(
            term=7,
            log=log.get("log", self.log),  # type: ignore[arg-type]
            inbox=inbox,
            clock=self.clock,
            state=core.new_state(),
            last_seq=0,
            last_batch_id="",
            signer=SIGNER,
            verifier=SIGNER,
            config=config,
            lease_current=lambda: lease_current,
        )


async def _until_answered(requests: Sequence[Request]) -> None:
    while not all(r.replies for r in requests):  # noqa: ASYNC110 (virtual time: polling is free)
        await asyncio.sleep(0.001)


def _deposits(count: int) -> list[core.AnyCommand]:
    commands: list[core.AnyCommand] = [core.OpenAccount(request_id="open", account_id="alice")]
    commands += [
        core.Deposit(
            request_id=f"dep-{n}", account_id="alice", amount_minor=100 + n, reason="test top-up"
        )
        for n in range(count - 1)
    ]
    return commands


def test_batches_are_pipelined_and_replies_wait_for_durability() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], list[int], list[LogEntry]]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(40))
        sequencer = setup.sequencer(
            Inbox(requests), SequencerConfig(max_batch_commands=5, max_inflight_appends=3)
        )
        in_flight_at_append: list[int] = []
        setup.service.on_append = lambda _w, _s: in_flight_at_append.append(
            sequencer.pending_batches
        )
        await race(sequencer.run(), _until_answered(requests))
        return requests, in_flight_at_append, setup.service.entries

    requests, in_flight, entries = run_virtual(main, max_virtual_ms=60_000)
    assert all(isinstance(r.replies[0], OutcomeReply) for r in requests)
    assert all(r.durable_when_answered == [True] for r in requests)
    assert len(entries) == 8
    assert [e.batch_id for e in entries] == [f"s7:{n}" for n in range(1, 9)]
    assert max(in_flight) >= 2
    assert max(in_flight) <= 3


def test_a_fenced_append_ends_the_term_and_every_request_hears_retry() -> None:
    async def main(loop: VirtualTimeLoop) -> list[Request]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(12))
        sequencer = setup.sequencer(
            Inbox(requests), SequencerConfig(max_batch_commands=3, max_inflight_appends=4)
        )
        # Another leader got there first (signed, chained on the same tip).
        rival = encode_signed_batch(SIGNER, "s6:1", "", core.encode_events([]))
        setup.service.append("rival", rival, 0, "s6:1")
        with pytest.raises(Superseded):
            await sequencer.run()
        return requests

    requests = run_virtual(main, max_virtual_ms=60_000)
    assert all(r.replies == [RetryReply(reason="aborted")] for r in requests)


def test_foreign_entries_under_a_busy_leader_are_skipped_without_ending_its_term() -> None:
    """Garbage and a forged batch land in the middle of the leader's
    pipeline: its fenced batches are appended again after them, every
    request is answered once durable, the fold applies each deposit once,
    and the leader's Merkle tree covers every entry of the log, the
    quarantined ones and its own voided batches too."""

    tree = LogTree(0)

    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], Sequencer, list[LogEntry]]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(30))
        quarantined: list[int] = []
        sequencer = Sequencer(
            term=7,
            log=setup.log,
            inbox=Inbox(requests),
            clock=setup.clock,
            state=core.new_state(),
            last_seq=0,
            last_batch_id="",
            signer=SIGNER,
            verifier=SIGNER,
            on_quarantine=lambda entry, reason: quarantined.append(entry.seq),
            config=SequencerConfig(max_batch_commands=3, max_inflight_appends=4),
            lease_current=lambda: True,
            tree=tree,
        )
        forger = MacSigner(b"not the replicas' key")

        async def attack() -> None:
            while setup.service.last_seq() < 3:  # noqa: ASYNC110 (virtual time)
                await asyncio.sleep(0.001)
            tip = setup.service.entries[-1]
            setup.service.publish_foreign(b"\xc1garbage", "x-1")
            setup.service.publish_foreign(
                encode_signed_batch(
                    forger, "s7:99", tip.batch_id, decode_batch(tip.payload).events
                ),
                "s7:99",
            )
            await _until_answered(requests)
            while sequencer.pending_batches:  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        await race(sequencer.run(), attack())
        assert len(quarantined) == 2
        return requests, sequencer, setup.service.entries

    requests, sequencer, entries = run_virtual(main, max_virtual_ms=60_000)
    assert all(r.replies and isinstance(r.replies[0], OutcomeReply) for r in requests)
    assert all(r.durable_when_answered == [True] for r in requests)
    assert sequencer.tip_rereads >= 1
    assert sequencer.quarantined == 2
    replay = ReplayState.empty(verifier=SIGNER)
    for entry in entries:
        replay.apply(entry)
    assert replay.quarantined == 2
    assert replay.state.accounts["alice"].balance_minor == sum(100 + n for n in range(29))
    assert core.state_hash(replay.state) == core.state_hash(sequencer.state)
    assert (tree.size, tree.root()) == (len(entries), _root(entries))


def test_an_idle_leader_passes_foreign_entries_into_its_tree() -> None:
    """Foreign entries appended while nothing is in flight: the leader's
    log watch passes them (`absorb_foreign_tail`), its tree takes them as
    leaves, and its next batch lands after them."""
    tree = LogTree(0)

    async def main(loop: VirtualTimeLoop) -> tuple[Sequencer, list[LogEntry]]:
        setup = Setup(loop)
        first, second = setup.requests(_deposits(2))
        inbox = Inbox([first])
        sequencer = Sequencer(
            term=7,
            log=setup.log,
            inbox=inbox,
            clock=setup.clock,
            state=core.new_state(),
            last_seq=0,
            last_batch_id="",
            signer=SIGNER,
            verifier=SIGNER,
            config=SequencerConfig(),
            lease_current=lambda: True,
            tree=tree,
        )

        async def attack() -> None:
            await _until_answered([first])
            while sequencer.pending_batches:  # noqa: ASYNC110 (virtual time)
                await asyncio.sleep(0.001)
            setup.service.publish_foreign(b"\xc1garbage", "x-1")
            await sequencer.absorb_foreign_tail(setup.service.last_seq())
            inbox.queue.append(second)
            await _until_answered([second])

        await race(sequencer.run(), attack())
        return sequencer, setup.service.entries

    sequencer, entries = run_virtual(main, max_virtual_ms=60_000)
    assert sequencer.quarantined == 1
    assert len(entries) == 3
    assert admit(entries[1], entries[0].batch_id, SIGNER).admission == "quarantined"
    assert admit(entries[2], entries[0].batch_id, SIGNER).admission == "applied"
    assert (tree.size, tree.root()) == (3, _root(entries))


def _root(entries: Sequence[LogEntry]) -> bytes:
    frontier = Frontier()
    for entry in entries:
        frontier.append(leaf_hash(log_tag(0), entry.seq, entry.payload))
    return frontier.root()


class LostAckLog:
    """Appends, then loses the first acknowledgement."""

    def __init__(self, inner: SimLog) -> None:
        self._inner = inner
        self.calls: list[tuple[str, int]] = []

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        self.calls.append((batch_id, expected_last_seq))
        seq = await self._inner.append(
            payload, expected_last_seq=expected_last_seq, batch_id=batch_id
        )
        if len(self.calls) == 1:
            raise AppendUnknown("ack lost")
        return seq

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        return await self._inner.read(from_seq, max_entries=max_entries, wait_ms=wait_ms)

    async def last_seq(self) -> int:
        return await self._inner.last_seq()


def test_an_unknown_append_is_retried_with_the_same_batch_id_and_deduplicated() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], LostAckLog, LogService]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(1))
        flaky = LostAckLog(setup.log)
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig(), log=flaky)
        await race(sequencer.run(), _until_answered(requests))
        return requests, flaky, setup.service

    requests, flaky, service = run_virtual(main, max_virtual_ms=60_000)
    assert flaky.calls == [("s7:1", 0), ("s7:1", 0)]
    assert service.duplicates_answered == 1
    assert len(service.entries) == 1
    assert isinstance(requests[0].replies[0], OutcomeReply)


class SteppedDownLog:
    """A stream leader that steps down with one batch's append in flight, as
    JetStream does: the batch lands, but its acknowledgement is lost, and the
    retry is refused as fenced by the new stream leader (`lands`); or the batch
    does not land and the new stream leader, still applying what its
    predecessor acknowledged, refuses it and answers a last sequence one
    behind the acknowledged tip (`lands=False`), `rounds` times in a row."""

    def __init__(self, inner: SimLog, batch_id: str, *, lands: bool, rounds: int = 1) -> None:
        self._inner = inner
        self._batch_id = batch_id
        self._lands = lands
        self._refusals_left = rounds
        self._behind_answers = 0
        self.calls: list[tuple[str, int]] = []

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        self.calls.append((batch_id, expected_last_seq))
        if batch_id != self._batch_id or self._refusals_left == 0:
            return await self._inner.append(
                payload, expected_last_seq=expected_last_seq, batch_id=batch_id
            )
        self._refusals_left -= 1
        if self._lands:
            await self._inner.append(
                payload, expected_last_seq=expected_last_seq, batch_id=batch_id
            )
        else:
            self._behind_answers += 1
        raise Fenced(f"wrong last sequence: {expected_last_seq - 1}")

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        return await self._inner.read(from_seq, max_entries=max_entries, wait_ms=wait_ms)

    async def last_seq(self) -> int:
        last_seq = await self._inner.last_seq()
        if self._behind_answers:
            self._behind_answers -= 1
            return last_seq - 1
        return last_seq


@pytest.mark.parametrize("lands", [True, False])
def test_a_stream_leader_stepping_down_under_an_append_does_not_end_the_term(lands: bool) -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], SteppedDownLog, LogService]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(12))
        log = SteppedDownLog(setup.log, "s7:2", lands=lands)
        sequencer = setup.sequencer(
            Inbox(requests), SequencerConfig(max_batch_commands=3, max_inflight_appends=4), log=log
        )
        await race(sequencer.run(), _until_answered(requests))
        return requests, log, setup.service

    requests, log, service = run_virtual(main, max_virtual_ms=60_000)
    assert all(isinstance(r.replies[0], OutcomeReply) for r in requests)
    assert all(r.durable_when_answered == [True] for r in requests)
    assert [e.batch_id for e in service.entries] == ["s7:1", "s7:2", "s7:3", "s7:4"]
    appends_of_the_batch = [call for call in log.calls if call[0] == "s7:2"]
    # Landed: acknowledged from the log, never appended again. Not landed:
    # appended again unchanged (same id, same expected sequence).
    assert appends_of_the_batch == ([("s7:2", 1)] if lands else [("s7:2", 1), ("s7:2", 1)])
    replay = ReplayState.empty(verifier=SIGNER)
    for entry in service.entries:
        replay.apply(entry)
    assert replay.state.accounts["alice"].balance_minor == sum(100 + n for n in range(11))


def test_a_log_that_stays_behind_its_acknowledged_tip_ends_the_term() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], SteppedDownLog]:
        setup = Setup(loop)
        requests = setup.requests(_deposits(6))
        config = SequencerConfig(max_batch_commands=3, max_inflight_appends=4)
        log = SteppedDownLog(setup.log, "s7:2", lands=False, rounds=config.append_attempts + 1)
        sequencer = setup.sequencer(Inbox(requests), config, log=log)
        with pytest.raises(Fenced, match="after 4 rounds"):
            await sequencer.run()
        return requests, log

    requests, log = run_virtual(main, max_virtual_ms=60_000)
    assert [call for call in log.calls if call[0] == "s7:2"] == [("s7:2", 1)] * 5
    assert all(r.replies == [RetryReply(reason="aborted")] for r in requests[3:])


def test_a_repeat_is_answered_with_the_first_outcome_after_it_is_durable() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], LogService]:
        setup = Setup(loop)
        requests = setup.requests([*_deposits(3), *_deposits(3)])
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig(max_batch_commands=3))
        await race(sequencer.run(), _until_answered(requests))
        return requests, setup.service

    requests, service = run_virtual(main, max_virtual_ms=60_000)
    assert [r.replies for r in requests[:3]] == [r.replies for r in requests[3:]]
    assert all(r.durable_when_answered == [True] for r in requests)
    assert len(service.entries) == 1


@pytest.mark.parametrize("lease_current", [True, False])
def test_a_read_is_answered_only_while_the_lease_is_known_current(lease_current: bool) -> None:
    """A leader that cannot show its lease is still current (it was paused
    past the TTL, say) must not answer a read from a state a rival may have
    moved on from: with nothing in flight to prove it leads, it says retry."""

    async def main(loop: VirtualTimeLoop) -> list[Request]:
        setup = Setup(loop)
        requests = setup.requests([core.GetAccount(request_id="read", account_id="alice")])
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig(), lease_current=lease_current)
        await race(sequencer.run(), _until_answered(requests))
        return requests

    (request,) = run_virtual(main, max_virtual_ms=60_000)
    if lease_current:
        assert isinstance(request.replies[0], OutcomeReply)
    else:
        assert request.replies == [RetryReply(reason="aborted")]


def test_a_read_behind_a_batch_in_flight_waits_for_its_ack_whatever_the_lease() -> None:
    """The acknowledgement of the batch before it proves no rival wrote in
    between, so the read is answered after it, lease or not."""

    async def main(loop: VirtualTimeLoop) -> list[Request]:
        setup = Setup(loop)
        commands: list[core.AnyCommand] = [
            *_deposits(2),
            core.GetAccount(request_id="read", account_id="alice"),
        ]
        requests = setup.requests(commands)
        sequencer = setup.sequencer(
            Inbox(requests), SequencerConfig(max_batch_commands=2), lease_current=False
        )
        await race(sequencer.run(), _until_answered(requests))
        return requests

    requests = run_virtual(main, max_virtual_ms=60_000)
    assert all(isinstance(r.replies[0], OutcomeReply) for r in requests)
    assert requests[2].durable_when_answered == [False]


def test_an_undecodable_command_is_a_bad_request_and_logs_nothing() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], LogService]:
        setup = Setup(loop)
        requests = setup.requests([b"\x93not a command"])
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig())
        await race(sequencer.run(), _until_answered(requests))
        return requests, setup.service

    requests, service = run_virtual(main, max_virtual_ms=60_000)
    assert isinstance(requests[0].replies[0], BadRequestReply)
    assert service.entries == []


def test_a_command_on_another_familys_subject_is_refused_and_logs_nothing() -> None:
    """A deposit sent on the market subject (all an ingester may use) is
    refused; the same deposit on the wallet subject is applied."""

    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], LogService]:
        setup = Setup(loop)
        deposit = core.encode_command(
            core.Deposit(
                request_id="smuggled",
                account_id="alice",
                amount_minor=1_000,
                reason="test top-up",
                principal=core.Principal(subject="cashier:c", role="cashier"),
            )
        )
        requests = [
            Request(deposit, setup.service, family="market"),
            Request(deposit, setup.service, family="query"),
        ]
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig())
        await race(sequencer.run(), _until_answered(requests))
        assert sequencer.commands_wrong_family == 2
        return requests, setup.service

    requests, service = run_virtual(main, max_virtual_ms=60_000)
    for request in requests:
        reply = request.replies[0]
        assert isinstance(reply, BadRequestReply)
        assert "not a" in reply.message
    assert service.entries == []


def test_a_command_that_crashes_the_core_is_refused_and_the_leader_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_decide = core.decide

    def decide(state: core.LedgerState, command: core.AnyCommand, now_ms: int) -> core.Outcome:
        if command.request_id == "poison":
            raise ZeroDivisionError("core bug")
        return real_decide(state, command, now_ms)

    monkeypatch.setattr(core, "decide", decide)

    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], LogService]:
        setup = Setup(loop)
        poison = core.Deposit(
            request_id="poison", account_id="alice", amount_minor=1, reason="test top-up"
        )
        after = [
            core.Deposit(
                request_id=f"after-{n}", account_id="alice", amount_minor=5, reason="test top-up"
            )
            for n in range(2)
        ]
        requests = setup.requests([*_deposits(2), poison, *after])
        sequencer = setup.sequencer(Inbox(requests), SequencerConfig(max_batch_commands=2))
        await race(sequencer.run(), _until_answered(requests))
        return requests, setup.service

    requests, service = run_virtual(main, max_virtual_ms=60_000)
    poisoned = requests[2].replies[0]
    assert isinstance(poisoned, BadRequestReply)
    assert "internal error" in poisoned.message
    assert all(isinstance(r.replies[0], OutcomeReply) for i, r in enumerate(requests) if i != 2)
    assert len(service.entries) == 3


def _state_with_bets(bets: int, slice_bets: int) -> core.LedgerState:
    state = core.new_state(core.LedgerConfig(result_slice_bets=slice_bets))
    selections = (
        core.SelectionSpec(selection_id="a", name="A", odds=200),
        core.SelectionSpec(selection_id="b", name="B", odds=300),
    )
    setup: list[core.AnyCommand] = [
        core.OpenAccount(request_id="open", account_id="alice"),
        core.Deposit(
            request_id="fund", account_id="alice", amount_minor=100_000, reason="test top-up"
        ),
        core.CreateMarket(
            request_id="create", market_id="m", event_id="e", name="M", selections=selections
        ),
    ]
    setup += [
        core.PlaceBet(
            request_id=f"bet-{n}",
            account_id="alice",
            stake_minor=10,
            legs=(core.BetLeg(market_id="m", selection_id="ab"[n % 2], odds=(200, 300)[n % 2]),),
        )
        for n in range(bets)
    ]
    setup.append(core.CloseMarket(request_id="close", market_id="m"))
    for command in setup:
        outcome = core.decide(state, issued(command, PEOPLE), 0)
        assert isinstance(outcome, core.Accepted), outcome
        for event in outcome.events:
            core.apply(state, event)
    return state


def test_a_big_result_is_logged_one_slice_per_entry_between_client_batches() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], list[LogEntry], Sequencer]:
        setup = Setup(loop)
        settle = core.SettleMarket(request_id="settle", market_id="m", winners=(core.Winner("a"),))
        deposits = [
            core.Deposit(
                request_id=f"dep-{n}", account_id="alice", amount_minor=1, reason="test top-up"
            )
            for n in range(30)
        ]
        requests = setup.requests([settle, *deposits])
        sequencer = Sequencer(
            term=7,
            log=setup.log,
            inbox=Inbox(requests),
            clock=setup.clock,
            state=_state_with_bets(40, slice_bets=4),
            last_seq=0,
            last_batch_id="",
            signer=SIGNER,
            verifier=SIGNER,
            config=SequencerConfig(max_batch_commands=3, max_inflight_appends=4),
            lease_current=lambda: True,
        )

        async def until_settled() -> None:
            await _until_answered(requests)
            while sequencer.state.settlements or sequencer.pending_batches:  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        await race(sequencer.run(), until_settled())
        return requests, setup.service.entries, sequencer

    requests, entries, sequencer = run_virtual(main, max_virtual_ms=60_000)
    slices_per_entry: list[int] = []
    deposits_per_entry: list[int] = []
    for entry in entries:
        events = core.decode_events(decode_batch(entry.payload).events)
        slices_per_entry.append(sum(isinstance(e, core.events.MarketResulted) for e in events))
        deposits_per_entry.append(sum(isinstance(e, core.events.Deposited) for e in events))
    assert sum(slices_per_entry) == 10
    assert max(slices_per_entry) == 1  # one slice of a market per log entry
    with_slices = [n for n, count in enumerate(slices_per_entry) if count]
    # Client commands were logged while the result was in progress.
    assert sum(deposits_per_entry[with_slices[0] : with_slices[-1]]) > 0
    assert sequencer.slices_decided == 9  # the first slice was the client's command's
    assert sequencer.state.markets["m"].status == "settled"
    assert core.check_invariants(sequencer.state) == []
    assert all(isinstance(r.replies[0], OutcomeReply) for r in requests)


def test_a_slice_that_raises_leaves_the_result_unfinished_and_the_partition_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_decide = core.decide

    def broken_decide(state: core.LedgerState, command: object, now_ms: int) -> core.Outcome:
        if isinstance(command, core.ContinueResult):
            raise RuntimeError("a bug in the core")
        return real_decide(state, command, now_ms)  # type: ignore[arg-type]

    monkeypatch.setattr(core, "decide", broken_decide)

    async def main(loop: VirtualTimeLoop) -> tuple[list[Request], Sequencer]:
        setup = Setup(loop)
        settle = core.SettleMarket(request_id="settle", market_id="m", winners=(core.Winner("a"),))
        requests = setup.requests([settle])
        inbox = Inbox(requests)
        sequencer = Sequencer(
            term=7,
            log=setup.log,
            inbox=inbox,
            clock=setup.clock,
            state=_state_with_bets(8, slice_bets=4),
            last_seq=0,
            last_batch_id="",
            signer=SIGNER,
            verifier=SIGNER,
            config=SequencerConfig(max_batch_commands=3),
            lease_current=lambda: True,
        )

        async def later_deposit() -> None:
            await _until_answered(requests)
            await asyncio.sleep(1.0)
            deposit = core.Deposit(
                request_id="dep", account_id="alice", amount_minor=5, reason="test top-up"
            )
            requests.extend(setup.requests([deposit]))
            inbox.queue.append(requests[-1])
            await _until_answered(requests)

        await race(sequencer.run(), later_deposit())
        return requests, sequencer

    requests, sequencer = run_virtual(main, max_virtual_ms=60_000)
    assert all(isinstance(r.replies[0], OutcomeReply) for r in requests)
    assert sequencer.commands_failed == 1  # tried once, not in a loop
    assert sequencer.state.markets["m"].status == "settling"
