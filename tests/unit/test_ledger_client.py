"""The ledger client's async driver over an in-memory transport."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from ironbook import core
from ironbook.adapters.clock import MonotonicClock
from ironbook.core.events import AccountReply
from ironbook.replication.client import BatchConfig, ClientConfig, GaveUp
from ironbook.replication.families import Family
from ironbook.replication.interfaces import NoResponders
from ironbook.replication.ledger_client import ClientStopped, LedgerClient
from ironbook.replication.wire import OutcomeReply, encode_reply


def _accepted(payload: bytes) -> bytes:
    command = core.decode_command(payload)
    assert isinstance(command, core.Deposit)
    outcome = core.Accepted(
        events=(), result=AccountReply(account_id=command.account_id, balance_minor=1)
    )
    return encode_reply(OutcomeReply(outcome=core.encode_outcome(outcome)))


class FakeTransport:
    """Answers every command accepted, after `hold` is set; or fails the way
    it is told to."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, tuple[bytes, ...]]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_next: list[BaseException] = []
        self.closed = False

    async def request(
        self, partition: int, family: Family, payloads: Sequence[bytes], *, timeout_ms: int
    ) -> list[bytes]:
        self.requests.append((partition, tuple(payloads)))
        if self.fail_next:
            raise self.fail_next.pop(0)
        await self.hold.wait()
        return [_accepted(payload) for payload in payloads]

    async def close(self) -> None:
        self.closed = True


def _client(transport: FakeTransport, **config: int) -> LedgerClient:
    return LedgerClient(
        transport,
        partitions=1,
        clock=MonotonicClock(),
        rng=random.Random(1),
        config=ClientConfig(**config),
        batching=BatchConfig(max_batch_commands=100, max_inflight_batches=1),
    )


def _deposit(n: int) -> core.Deposit:
    return core.Deposit(
        request_id=f"r{n}", account_id=f"acct-{n}", amount_minor=5, reason="test top-up"
    )


def test_concurrent_submits_share_one_request() -> None:
    async def main() -> None:
        transport = FakeTransport()
        async with _client(transport) as client, asyncio.TaskGroup() as group:
            tasks = [group.create_task(client.submit(_deposit(n))) for n in range(10)]
        assert len(transport.requests) == 1 and len(transport.requests[0][1]) == 10
        assert all(isinstance(task.result(), core.Accepted) for task in tasks)
        assert transport.closed

    asyncio.run(main())


def test_a_failed_request_is_retried_and_counted() -> None:
    async def main() -> None:
        transport = FakeTransport()
        transport.fail_next = [NoResponders("nobody"), NoResponders("nobody")]
        async with _client(transport, backoff_initial_ms=1, backoff_max_ms=2) as client:
            outcome = await client.submit(_deposit(1))
            assert isinstance(outcome, core.Accepted)
            assert client.resends == {"no_responders": 2}
            assert client.attempts == 3 == client.requests
        assert {payloads for _, payloads in transport.requests} == {
            (core.encode_command(_deposit(1)),)
        }

    asyncio.run(main())


def test_the_deadline_ends_a_submit_with_gave_up() -> None:
    async def main() -> None:
        transport = FakeTransport()
        transport.hold.clear()  # never answers
        async with _client(transport, request_timeout_ms=20, deadline_ms=50) as client:
            with pytest.raises(GaveUp, match="r1"):
                await client.submit(_deposit(1))

    asyncio.run(main())


def test_a_cancelled_caller_leaves_the_others_their_outcomes() -> None:
    async def main() -> None:
        transport = FakeTransport()
        transport.hold.clear()
        async with _client(transport) as client:
            async with asyncio.TaskGroup() as group:
                doomed = group.create_task(client.submit(_deposit(1)))
                kept = group.create_task(client.submit(_deposit(2)))
                await asyncio.sleep(0.01)
                doomed.cancel()
                await asyncio.sleep(0.01)
                transport.hold.set()
            assert doomed.cancelled()
            assert isinstance(kept.result(), core.Accepted)

    asyncio.run(main())


def test_closing_stops_waiting_callers() -> None:
    async def main() -> None:
        transport = FakeTransport()
        transport.hold.clear()
        client = _client(transport)

        async def wait_for_outcome() -> None:
            with pytest.raises(ClientStopped):
                await client.submit(_deposit(1))

        async with asyncio.TaskGroup() as group:
            group.create_task(wait_for_outcome())
            await asyncio.sleep(0.01)
            await client.close()
        with pytest.raises(ClientStopped):
            await client.submit(_deposit(2))

    asyncio.run(main())


def test_a_broken_transport_fails_the_callers_loudly() -> None:
    async def main() -> None:
        transport = FakeTransport()
        transport.fail_next = [RuntimeError("transport bug")]
        client = _client(transport)
        with pytest.raises(ClientStopped) as raised:
            await client.submit(_deposit(1))
        assert "transport bug" in repr(raised.value.__cause__)
        with pytest.raises(ClientStopped):
            await client.submit(_deposit(2))
        await client.close()

    asyncio.run(main())
