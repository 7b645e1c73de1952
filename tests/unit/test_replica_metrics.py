"""The replica's metrics: the metered ports measure what crosses them and pass
it through unchanged, commands are counted by kind and outcome from their
real encodings, and `/metrics` answers a real HTTP scrape on a free loopback
port with the role, term, applied sequence and lag sampled at that moment."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ironbook import core
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.procfs import memory_limit_bytes
from ironbook.core.events import TransactionReply
from ironbook.replication import wire
from ironbook.replication.families import Family
from ironbook.replication.follower import InProcessSnapshotWriter
from ironbook.replication.interfaces import (
    InboundRequest,
    LogEntry,
    LogUnavailable,
    RequestInbox,
    Snapshot,
    SnapshotInfo,
    SnapshotUnavailable,
)
from ironbook.replication.loop_blocks import LoopBlocks
from ironbook.replication.replica import ReplicaStatus
from ironbook.services.replica_metrics import ReplicaMetrics, serve_metrics


class FakeLog:
    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.unavailable = False

    async def append(self, payload: bytes, *, expected_last_seq: int, batch_id: str) -> int:
        assert expected_last_seq == len(self.entries)
        self.entries.append(payload)
        return len(self.entries)

    async def read(self, from_seq: int, *, max_entries: int, wait_ms: int) -> Sequence[LogEntry]:
        return []

    async def last_seq(self) -> int:
        if self.unavailable:
            raise LogUnavailable("down")
        return len(self.entries)


class FakeSnapshots:
    unavailable = False

    async def put(self, snapshot: Snapshot) -> int:
        if self.unavailable:
            raise SnapshotUnavailable("down")
        return len(snapshot.state) // 2

    async def latest(self) -> Snapshot | None:
        return None

    async def latest_info(self) -> SnapshotInfo | None:
        return None


class FakeRequest:
    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self.family: Family = "wallet"  # deposits, and junk
        self.replies: list[bytes] = []

    @property
    def payload(self) -> bytes:
        return self._payload

    async def respond(self, payload: bytes) -> None:
        self.replies.append(payload)


class FakeInbox:
    def __init__(self, requests: list[FakeRequest]) -> None:
        self.requests = requests
        self.closed = False

    async def receive(self, max_requests: int, *, wait_ms: int) -> Sequence[InboundRequest]:
        taken, self.requests = self.requests[:max_requests], self.requests[max_requests:]
        return taken

    async def close(self) -> None:
        self.closed = True


class FakeServer:
    def __init__(self, inbox: FakeInbox) -> None:
        self.inbox = inbox

    async def listen(self) -> RequestInbox:
        return self.inbox


def deposit(request_id: str) -> bytes:
    command = core.Deposit(
        request_id=request_id,
        account_id="alice",
        amount_minor=500,
        reason="test top-up",
        principal=core.Principal(subject="cashier:c", role="cashier"),
    )
    return core.encode_command(command)


def accepted() -> bytes:
    result = TransactionReply(account_id="alice", balance_minor=500, transaction_id="t1")
    return wire.encode_reply(wire.OutcomeReply(core.encode_outcome(core.Accepted((), result))))


def rejected() -> bytes:
    refusal = core.Rejected(code="insufficient_funds", message="no")
    return wire.encode_reply(wire.OutcomeReply(core.encode_outcome(refusal)))


def value(metrics: ReplicaMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"partition": "3", **labels})


def test_commands_are_counted_by_kind_and_outcome_and_replies_pass_through() -> None:
    metrics = ReplicaMetrics(3)
    requests = [FakeRequest(deposit(f"r{i}")) for i in range(5)] + [FakeRequest(b"\xc1junk")]
    server = metrics.server(FakeServer(FakeInbox(requests)))

    async def lead() -> None:
        inbox = await server.listen()
        first = await inbox.receive(4, wait_ms=0)
        second = await inbox.receive(4, wait_ms=0)
        assert [r.payload for r in [*first, *second]] == [r.payload for r in requests]
        await first[0].respond(accepted())
        await first[1].respond(accepted())
        await first[2].respond(rejected())
        await first[3].respond(wire.encode_reply(wire.RetryReply("aborted")))
        await second[0].respond(wire.encode_reply(wire.RetryReply("overloaded")))
        await second[1].respond(wire.encode_reply(wire.BadRequestReply("undecodable")))
        await inbox.close()

    asyncio.run(lead())
    assert requests[0].replies == [accepted()]
    assert (
        value(metrics, "ironbook_replica_commands_total", kind="deposit", outcome="accepted") == 2
    )
    assert (
        value(metrics, "ironbook_replica_commands_total", kind="deposit", outcome="rejected") == 1
    )
    assert value(metrics, "ironbook_replica_commands_total", kind="deposit", outcome="retry") == 2
    bad = value(
        metrics, "ironbook_replica_commands_total", kind="undecodable", outcome="bad_request"
    )
    assert bad == 1
    assert value(metrics, "ironbook_replica_batch_requests_count") == 2
    assert value(metrics, "ironbook_replica_batch_requests_sum") == 6


def test_appends_and_snapshots_are_timed_and_passed_through() -> None:
    metrics = ReplicaMetrics(3)
    inner = FakeLog()
    log = metrics.log(inner)
    store = FakeSnapshots()
    writer = metrics.snapshot_writer(InProcessSnapshotWriter(store, SystemClock()))
    snapshot = Snapshot(seq=2, state_hash="h", state=b"x" * 1000)

    async def work() -> None:
        assert await log.append(b"a", expected_last_seq=0, batch_id="b1") == 1
        assert await log.append(b"b", expected_last_seq=1, batch_id="b2") == 2
        assert await log.last_seq() == 2
        assert await writer.write(lambda: snapshot, LoopBlocks()) == SnapshotInfo(2, 500)
        store.unavailable = True
        with pytest.raises(SnapshotUnavailable):
            await writer.write(lambda: snapshot, LoopBlocks())

    asyncio.run(work())
    assert inner.entries == [b"a", b"b"]
    assert value(metrics, "ironbook_replica_append_seconds_count") == 2
    assert value(metrics, "ironbook_replica_snapshot_seconds_count") == 1
    assert value(metrics, "ironbook_replica_snapshot_bytes") == 500
    assert value(metrics, "ironbook_replica_snapshot_failures_total") == 1


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_a_scrape_samples_role_term_applied_and_lag_over_real_http() -> None:
    metrics = ReplicaMetrics(3)
    log = FakeLog()
    log.entries = [b"e"] * 12
    status = ReplicaStatus("p3-r1", "leader", 7, 10, 1, 2, quarantined=4)
    loop_blocks = LoopBlocks()
    loop_blocks.record_stall(400)

    async def scrape() -> tuple[bytes, bytes, bytes, bytes]:
        server = await serve_metrics(
            metrics, lambda: status, log, "127.0.0.1", 0, loop_blocks=loop_blocks
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            assert port != 0
            ok = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            missing = await _get(port, b"GET /other HTTP/1.1\r\n\r\n")
            garbage = await _get(port, b"\x00\x01 nonsense\r\n\r\n")
            log.unavailable = True
            without_log = await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        return ok, missing, garbage, without_log

    ok, missing, garbage, without_log = asyncio.run(scrape())
    assert ok.startswith(b"HTTP/1.1 200 OK")
    body = ok.decode()
    assert 'ironbook_replica_role{partition="3",role="leader"} 1.0' in body
    assert 'ironbook_replica_role{partition="3",role="follower"} 0.0' in body
    assert 'ironbook_replica_term{partition="3"} 7.0' in body
    assert 'ironbook_replica_applied_sequence{partition="3"} 10.0' in body
    assert 'ironbook_replica_stream_last_sequence{partition="3"} 12.0' in body
    assert 'ironbook_replica_lag_entries{partition="3"} 2.0' in body
    assert 'ironbook_replica_quarantined_entries{partition="3"} 4.0' in body
    assert 'ironbook_replica_loop_stalled_seconds_total{partition="3"} 0.4' in body
    (limit,) = [
        line.split()[-1]
        for line in body.splitlines()
        if line.startswith('ironbook_replica_memory_limit_bytes{partition="3"}')
    ]
    assert float(limit) == memory_limit_bytes()
    assert missing.startswith(b"HTTP/1.1 404")
    assert garbage.startswith(b"HTTP/1.1 404")
    # The log unreadable: the scrape still answers, keeping the last lag seen.
    assert without_log.startswith(b"HTTP/1.1 200 OK")
    assert 'ironbook_replica_lag_entries{partition="3"} 2.0' in without_log.decode()


def test_the_loop_stall_counter_is_shown_at_zero_before_any_stall() -> None:
    # A series that appears only with the first stall would give the
    # watcher no calm to compare that stall with.
    body = ReplicaMetrics(1).exposition().decode()
    assert 'ironbook_replica_loop_stalled_seconds_total{partition="1"} 0.0' in body
