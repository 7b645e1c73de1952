"""The `Log` contract against a real 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from ironbook.adapters.nats.log import IDLE_POLL_MS, NatsLog
from ironbook.adapters.nats.provision import close_nats, connect_nats
from ironbook.adapters.nats.server import LocalNatsCluster
from ironbook.replication.interfaces import AppendUnknown, Fenced, LogEntry, LogUnavailable

log = logging.getLogger(__name__)

PARTITION = 0
FAILOVER_DEADLINE_S = 60.0


async def _open_log(cluster: LocalNatsCluster) -> NatsLog:
    nc = await connect_nats(cluster.url)
    return await NatsLog.open(nc, PARTITION)


async def _close(ledger: NatsLog) -> None:
    await close_nats(ledger._nc)


async def _read_through(
    ledger: NatsLog, last_seq: int, *, max_entries: int = 100
) -> list[LogEntry]:
    """Entries 1..last_seq. Reads may be answered by a follower that lags
    behind the leader by a few milliseconds, so poll until all are there."""
    entries: list[LogEntry] = []
    deadline = time.monotonic() + 30
    while len(entries) < last_seq and time.monotonic() < deadline:
        got = await ledger.read(len(entries) + 1, max_entries=max_entries, wait_ms=1000)
        assert len(got) <= max_entries
        entries.extend(got)
    return entries


def test_append_assigns_consecutive_sequences_and_fences_stale_writers(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            assert await ledger.last_seq() == 0
            assert await ledger.append(b"one", expected_last_seq=0, batch_id="t1-1") == 1
            assert await ledger.append(b"two", expected_last_seq=1, batch_id="t1-2") == 2
            assert await ledger.last_seq() == 2

            # A writer that has not seen seq 2 is fenced and nothing is appended.
            with pytest.raises(Fenced):
                await ledger.append(b"stale", expected_last_seq=1, batch_id="t2-1")
            with pytest.raises(Fenced):
                await ledger.append(b"ahead", expected_last_seq=5, batch_id="t2-2")
            assert await ledger.last_seq() == 2

            # A batch over the server's max payload is refused before sending.
            assert ledger.max_payload_bytes == 8 * 1024 * 1024
            too_big = b"x" * (ledger.max_payload_bytes + 1)
            with pytest.raises(LogUnavailable):
                await ledger.append(too_big, expected_last_seq=2, batch_id="t1-3")
            assert await ledger.last_seq() == 2
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_duplicate_batch_id_returns_the_original_sequence(nats_cluster: LocalNatsCluster) -> None:
    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            assert await ledger.append(b"a", expected_last_seq=0, batch_id="t1-1") == 1
            assert await ledger.append(b"b", expected_last_seq=1, batch_id="t1-2") == 2
            # The server checks the msg id before the expected sequence: a
            # retry of batch t1-1 answers seq 1 whatever it expects or carries.
            assert await ledger.append(b"a", expected_last_seq=0, batch_id="t1-1") == 1
            assert await ledger.append(b"other", expected_last_seq=2, batch_id="t1-1") == 1
            assert await ledger.last_seq() == 2
            entries = await _read_through(ledger, 2)
            assert [(e.seq, e.batch_id, e.payload) for e in entries] == [
                (1, "t1-1", b"a"),
                (2, "t1-2", b"b"),
            ]
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_read_returns_ranges_and_waits_for_new_entries(nats_cluster: LocalNatsCluster) -> None:
    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            assert await ledger.read(1, max_entries=10, wait_ms=50) == []
            for seq in range(1, 11):
                payload = f"batch {seq}".encode()
                await ledger.append(payload, expected_last_seq=seq - 1, batch_id=f"t1-{seq}")

            # Reads may be served by a follower that lags: poll until caught up.
            entries = await ledger.read(4, max_entries=3, wait_ms=5000)
            assert [e.seq for e in entries] == [4, 5, 6][: len(entries)]
            assert entries and entries[0].payload == b"batch 4"

            collected = await _read_through(ledger, 10, max_entries=4)
            assert [e.seq for e in collected] == list(range(1, 11))
            assert [e.batch_id for e in collected] == [f"t1-{s}" for s in range(1, 11)]

            # A read past the end waits, and returns as soon as an entry lands.
            waiter = asyncio.create_task(ledger.read(11, max_entries=10, wait_ms=20_000))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await ledger.append(b"late", expected_last_seq=10, batch_id="t1-11")
            late = await asyncio.wait_for(waiter, timeout=30)
            assert [(e.seq, e.payload) for e in late] == [(11, b"late")]
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_a_waiting_reader_reads_on_announcements_not_in_a_loop(
    nats_cluster: LocalNatsCluster,
) -> None:
    """An idle follower used to poll ~80 times a second. Now a reader with
    nothing announced past its position reads again only on an announcement
    or every `IDLE_POLL_MS`; an append it was not told about (a writer that
    died before announcing) is still read, by that fallback."""

    async def scenario() -> None:
        writer = await _open_log(nats_cluster)
        reader = await _open_log(nats_cluster)
        reads = 0
        direct_get_batch = reader._direct_get_batch

        async def counted(from_seq: int, max_entries: int) -> list[LogEntry]:
            nonlocal reads
            reads += 1
            return await direct_get_batch(from_seq, max_entries)

        reader._direct_get_batch = counted  # type: ignore[method-assign]
        try:
            idle_s = 2.0
            assert await reader.read(1, max_entries=10, wait_ms=int(idle_s * 1000)) == []
            # One read at the start, one per fallback period, one at the end.
            assert reads <= 2 + idle_s * 1000 / IDLE_POLL_MS, reads

            waiter = asyncio.create_task(reader.read(1, max_entries=10, wait_ms=20_000))
            await asyncio.sleep(0.2)
            reads = 0
            await writer.append(b"announced", expected_last_seq=0, batch_id="t1-1")
            entries = await asyncio.wait_for(waiter, timeout=30)
            assert [(e.seq, e.payload) for e in entries] == [(1, b"announced")]

            # Stored without an announcement: a plain publish to the stream.
            waiter = asyncio.create_task(reader.read(2, max_entries=10, wait_ms=20_000))
            await asyncio.sleep(0.2)
            await writer._nc.request(writer.subject, b"silent", timeout=5)
            entries = await asyncio.wait_for(waiter, timeout=30)
            assert [(e.seq, e.payload) for e in entries] == [(2, b"silent")]
        finally:
            await _close(reader)
            await _close(writer)

    asyncio.run(scenario())


def test_pipelined_appends_land_in_order(nats_cluster: LocalNatsCluster) -> None:
    """Many appends in flight at once, each expecting its predecessor."""
    batches = 300
    in_flight = 32

    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            window: list[asyncio.Task[int]] = []
            acked: list[int] = []
            for index in range(batches):
                append = ledger.append(
                    f"batch {index}".encode(), expected_last_seq=index, batch_id=f"t1-{index}"
                )
                window.append(asyncio.create_task(append))
                if len(window) >= in_flight:
                    acked.append(await window.pop(0))
            acked.extend([await task for task in window])
            assert acked == list(range(1, batches + 1))
            assert await ledger.last_seq() == batches
        finally:
            await _close(ledger)

    asyncio.run(scenario())


async def _append_until_acked(ledger: NatsLog, payload: bytes, seq: int, batch_id: str) -> int:
    """What a sequencer does after an unknown outcome: retry the same batch
    with the same expectation until the log answers."""
    deadline = time.monotonic() + FAILOVER_DEADLINE_S
    while True:
        try:
            return await ledger.append(payload, expected_last_seq=seq - 1, batch_id=batch_id)
        except (AppendUnknown, LogUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_kill_9_of_stream_leader_then_appends_resume_and_nothing_is_lost(
    nats_cluster: LocalNatsCluster,
) -> None:
    stream = f"LEDGER_{PARTITION}"

    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            for seq in range(1, 51):
                await _append_until_acked(ledger, f"before {seq}".encode(), seq, f"t1-{seq}")
            leader = await asyncio.to_thread(nats_cluster.wait_stream_leader, stream)

            killed_at = time.monotonic()
            nats_cluster.kill_node(leader)
            seq = 51
            await _append_until_acked(ledger, b"first after kill", seq, f"t1-{seq}")
            gap_s = time.monotonic() - killed_at
            log.warning("kill -9 of stream leader %s: appends resumed after %.2f s", leader, gap_s)
            print(f"\nfailover gap after kill -9 of {leader}: {gap_s:.2f} s")

            for seq in range(52, 101):
                await _append_until_acked(ledger, f"after {seq}".encode(), seq, f"t1-{seq}")
            new_leader = await asyncio.to_thread(
                nats_cluster.wait_stream_leader, stream, not_on=leader
            )
            assert new_leader != leader

            # Restart the dead node: it catches up, and every acked batch is
            # in the log exactly once, in order.
            await asyncio.to_thread(nats_cluster.start_node, leader)
            assert await ledger.last_seq() == 100
            entries = await _read_through(ledger, 100)
            assert [e.batch_id for e in entries] == [f"t1-{s}" for s in range(1, 101)]
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_an_unreachable_cluster_gives_unknown_appends_and_unavailable_reads(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            assert await ledger.append(b"a", expected_last_seq=0, batch_id="t1-1") == 1
            nats_cluster.stop()
            with pytest.raises(AppendUnknown):
                await ledger.append(b"b", expected_last_seq=1, batch_id="t1-2")
            with pytest.raises(LogUnavailable):
                await ledger.last_seq()
            assert await ledger.read(1, max_entries=10, wait_ms=100) == []
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_sigstop_of_stream_leader_then_appends_resume_and_it_rejoins(
    nats_cluster: LocalNatsCluster,
) -> None:
    """A frozen leader keeps its sockets open: clients must give up on it
    (pings) and the others must elect a new leader; when it wakes up it must
    follow, and the log has every acked batch exactly once."""
    stream = f"LEDGER_{PARTITION}"

    async def scenario() -> None:
        ledger = await _open_log(nats_cluster)
        try:
            for seq in range(1, 21):
                await _append_until_acked(ledger, b"before", seq, f"t1-{seq}")
            leader = await asyncio.to_thread(nats_cluster.wait_stream_leader, stream)
            paused_at = time.monotonic()
            nats_cluster.pause_node(leader)
            try:
                await _append_until_acked(ledger, b"while frozen", 21, "t1-21")
                gap_s = time.monotonic() - paused_at
                print(f"\nfailover gap after SIGSTOP of {leader}: {gap_s:.2f} s")
                for seq in range(22, 41):
                    await _append_until_acked(ledger, b"while frozen", seq, f"t1-{seq}")
            finally:
                nats_cluster.resume_node(leader)
            for seq in range(41, 61):
                await _append_until_acked(ledger, b"after", seq, f"t1-{seq}")
            await asyncio.to_thread(nats_cluster.wait_node_healthy, leader, 60_000)
            assert await ledger.last_seq() == 60
            entries = await _read_through(ledger, 60)
            assert [e.batch_id for e in entries] == [f"t1-{s}" for s in range(1, 61)]
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_an_append_the_stream_leader_drops_ends_when_a_new_leader_is_elected(
    nats_cluster: LocalNatsCluster,
) -> None:
    """The stream leader is frozen with an append in flight: the append ends
    as unknown when the stream's new leader is elected, long before its own
    timeout, and the same batch retried lands once."""
    stream = f"LEDGER_{PARTITION}"
    timeout_ms = 600_000

    async def scenario() -> None:
        await _close(await _open_log(nats_cluster))  # creates the stream
        leader = await asyncio.to_thread(nats_cluster.wait_stream_leader, stream)
        elsewhere = next(node for name, node in nats_cluster.nodes.items() if name != leader)
        nc = await connect_nats(elsewhere.url)
        ledger = await NatsLog.open(nc, PARTITION, append_timeout_ms=timeout_ms)
        try:
            for seq in range(1, 11):
                await _append_until_acked(ledger, b"before", seq, f"t1-{seq}")
            nats_cluster.pause_node(leader)
            try:
                paused_at = time.monotonic()
                with pytest.raises(AppendUnknown, match="new stream leader"):
                    await asyncio.wait_for(
                        ledger.append(b"in flight", expected_last_seq=10, batch_id="t1-11"),
                        FAILOVER_DEADLINE_S,
                    )
                print(f"\nappend ended {time.monotonic() - paused_at:.2f} s after SIGSTOP")
                assert await _append_until_acked(ledger, b"in flight", 11, "t1-11") == 11
            finally:
                nats_cluster.resume_node(leader)
            entries = await _read_through(ledger, 11)
            assert [e.batch_id for e in entries] == [f"t1-{s}" for s in range(1, 12)]
        finally:
            await _close(ledger)

    asyncio.run(scenario())


def test_opening_an_existing_stream_with_another_config_uses_it(
    nats_cluster: LocalNatsCluster,
) -> None:
    async def scenario() -> None:
        nc = await connect_nats(nats_cluster.url)
        try:
            first = await NatsLog.open(nc, PARTITION, duplicate_window_s=60)
            assert await first.append(b"a", expected_last_seq=0, batch_id="t1-1") == 1
            again = await NatsLog.open(nc, PARTITION, duplicate_window_s=120)
            assert await again.last_seq() == 1
            assert await again.append(b"b", expected_last_seq=1, batch_id="t1-2") == 2
        finally:
            await close_nats(nc)

    asyncio.run(scenario())
