"""The ledger client: submit commands to the partition leaders over NATS.

    client = await LedgerClient.connect("nats://127.0.0.1:4222", partitions=1)
    outcome = await client.submit(core.PlaceBet(...))

Account commands go to the partition that owns the account (a stable hash).
Market commands (feed batches and producer status included) go to every
partition, since each partition's log carries its own copy of every market;
the replies are combined (a feed batch reports the smallest cursor reached).
`submit_to` sends a command to one partition as is
(`ReleaseBets`, or a `GetFeedCursor` per partition).

Concurrent `submit` calls are batched: commands waiting for the same partition
travel together in one NATS request (up to `max_batch_commands`), and the
leader answers them together, so a thousand callers cost a handful of round
trips. A command that gets no answer (timeout, no leader, leader stepped down)
is resent with the same request id, with jittered exponential backoff, until
an overall deadline: a failover shows up as latency, never as an error or a
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.transport import batch_subject, decode_batch, encode_batch
from ironbook.core.events import FeedReply, SettlementReply
from ironbook.replication.client import BadRequest, ClientConfig, GaveUp
from ironbook.replication.wire import BadRequestReply, OutcomeReply, RetryReply, decode_reply

__all__ = ["BadRequest", "BatchConfig", "ClientConfig", "GaveUp", "LedgerClient"]

_MARKET_COMMANDS = (
    core.CreateMarket,
    core.UpdatePrices,
    core.SuspendMarket,
    core.ResumeMarket,
    core.CloseMarket,
    core.SettleMarket,
    core.VoidMarket,
    core.ResettleMarket,
    core.RollbackSettlement,
    core.FeedBatch,
    core.SetProducerStatus,
)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_batch_commands: int = 1_000
    max_inflight_batches: int = 16
    """Batch requests awaiting replies, per partition."""


@dataclass(slots=True)
class _Pending:
    payload: bytes
    request_id: str
    future: asyncio.Future[core.Outcome]
    deadline: float
    """`time.monotonic()` past which the command is given up."""
    backoff_ms: int


class _PartitionBatcher:
    """Sends the commands for one partition in batches, and resends the ones
    that got no outcome."""

    def __init__(
        self,
        nc: NatsClient,
        partition: int,
        config: ClientConfig,
        batching: BatchConfig,
        rng: random.Random,
    ) -> None:
        self._nc = nc
        self._subject = batch_subject(partition)
        self._config = config
        self._batching = batching
        self._rng = rng
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(batching.max_inflight_batches)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.attempts = 0
        self.resends: Counter[str] = Counter()
        """Why commands were sent again: `timeout`, `no_responders`,
        `transport`, `malformed` or the leader's `retry:<reason>`."""

    def submit(self, payload: bytes, request_id: str) -> asyncio.Future[core.Outcome]:
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        pending = _Pending(
            payload=payload,
            request_id=request_id,
            future=loop.create_future(),
            deadline=time.monotonic() + self._config.deadline_ms / 1000,
            backoff_ms=self._config.backoff_initial_ms,
        )
        self._enqueue(pending)
        return pending.future

    def _enqueue(self, pending: _Pending) -> None:
        if not pending.future.done():
            self._queue.append(pending)
            self._wake.set()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                await self._slots.acquire()
                await asyncio.sleep(0)  # let callers that are ready join this batch
                items = [
                    queue.popleft()
                    for _ in range(min(len(queue), self._batching.max_batch_commands))
                ]
                items = [item for item in items if not item.future.done()]
                if not items:
                    self._slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._send(items))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[_Pending]) -> None:
        self.attempts += len(items)
        replies: list[bytes] | None = None
        failure = ""
        remaining_s = max(item.deadline for item in items) - time.monotonic()
        timeout_s = max(0.001, min(self._config.request_timeout_ms / 1000, remaining_s))
        try:
            message = await self._nc.request(
                self._subject, encode_batch([item.payload for item in items]), timeout=timeout_s
            )
            replies = decode_batch(message.data)
            if len(replies) != len(items):
                replies, failure = None, "malformed"
        except nats.errors.NoRespondersError:
            failure = "no_responders"
        except nats.errors.TimeoutError:
            failure = "timeout"
        except (nats.errors.Error, OSError):
            failure = "transport"
        except msgspec.MsgspecError:
            failure = "malformed"
        finally:
            self._slots.release()
        for index, item in enumerate(items):
            if item.future.done():
                continue
            reply = None
            if replies is not None:
                with contextlib.suppress(msgspec.MsgspecError):
                    reply = decode_reply(replies[index])
            if isinstance(reply, OutcomeReply):
                item.future.set_result(core.decode_outcome(reply.outcome))
            elif isinstance(reply, BadRequestReply):
                item.future.set_exception(BadRequest(reply.message))
            else:
                reason = f"retry:{reply.reason}" if isinstance(reply, RetryReply) else failure
                self.resends[reason or "malformed"] += 1
                self._retry_later(item)

    def _retry_later(self, item: _Pending) -> None:
        now = time.monotonic()
        if now >= item.deadline:
            item.future.set_exception(
                GaveUp(f"no outcome for {item.request_id} within {self._config.deadline_ms} ms")
            )
            return
        # Full jitter: the clients of a failed leader spread their retries out.
        delay_ms = self._rng.randint(item.backoff_ms // 2, item.backoff_ms)
        item.backoff_ms = min(item.backoff_ms * 2, self._config.backoff_max_ms)
        delay_s = min(delay_ms / 1000, item.deadline - now)
        asyncio.get_running_loop().call_later(delay_s, self._enqueue, item)

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()


class LedgerClient:
    def __init__(
        self,
        nc: NatsClient,
        *,
        partitions: int,
        config: ClientConfig | None = None,
        batching: BatchConfig | None = None,
        owns_connection: bool = False,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._nc = nc
        self._owns_connection = owns_connection
        self.partitions = partitions
        rng = random.Random()
        self._batchers = [
            _PartitionBatcher(
                nc, partition, config or ClientConfig(), batching or BatchConfig(), rng
            )
            for partition in range(partitions)
        ]

    @classmethod
    async def connect(
        cls,
        nats_url: str,
        *,
        partitions: int = 1,
        config: ClientConfig | None = None,
        batching: BatchConfig | None = None,
    ) -> LedgerClient:
        nc = await connect_nats(nats_url, name="ironbook-client")
        return cls(
            nc, partitions=partitions, config=config, batching=batching, owns_connection=True
        )

    @property
    def attempts(self) -> int:
        """Commands sent, resends included."""
        return sum(batcher.attempts for batcher in self._batchers)

    @property
    def resends(self) -> Counter[str]:
        """Commands sent again, by reason."""
        total: Counter[str] = Counter()
        for batcher in self._batchers:
            total.update(batcher.resends)
        return total

    def partition_for(self, account_id: str) -> int:
        return core.partition_of(account_id, self.partitions)

    async def submit(self, command: core.AnyCommand | core.AnyQuery) -> core.Outcome:
        """The durable outcome. Raises `GaveUp` past the deadline (the command
        may or may not have been applied: submit it again to find out).
        A query goes to the one partition that can answer it."""
        payload = core.encode_command(command)
        if isinstance(command, core.AnyQuery):
            batcher = self._batchers[core.query_partition(command, self.partitions)]
            return await batcher.submit(payload, command.request_id)
        if isinstance(command, _MARKET_COMMANDS):
            return await self._broadcast(command, payload)
        if isinstance(command, core.ReleaseBets):
            raise ValueError("ReleaseBets concerns one partition: use submit_to")
        account_id = getattr(command, "account_id", None)
        assert isinstance(account_id, str), f"{type(command).__name__} names no account"
        batcher = self._batchers[self.partition_for(account_id)]
        return await batcher.submit(payload, command.request_id)

    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome:
        """Send `command` to one partition, without routing: for commands
        about a partition itself (`ReleaseBets`) and per-partition reads
        (`GetFeedCursor`). Same retries and deadline as `submit`."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
        batcher = self._batchers[partition]
        return await batcher.submit(core.encode_command(command), command.request_id)

    async def submit_many(self, commands: Sequence[core.AnyCommand]) -> list[core.Outcome]:
        """Submit concurrently; outcomes in the order of `commands`."""
        return list(await asyncio.gather(*(self.submit(command) for command in commands)))

    async def _broadcast(self, command: core.AnyCommand, payload: bytes) -> core.Outcome:
        outcomes = await asyncio.gather(
            *(batcher.submit(payload, command.request_id) for batcher in self._batchers)
        )
        for outcome in outcomes:
            if isinstance(outcome, core.Rejected):
                return outcome
        first = outcomes[0]
        assert isinstance(first, core.Accepted)
        if isinstance(first.result, SettlementReply) and len(outcomes) > 1:
            replies = [o.result for o in outcomes if isinstance(o, core.Accepted)]
            settlements = [r for r in replies if isinstance(r, SettlementReply)]
            combined = SettlementReply(
                market_id=first.result.market_id,
                status=first.result.status,
                bets_affected=sum(r.bets_affected for r in settlements),
                paid_minor=sum(r.paid_minor for r in settlements),
            )
            return core.Accepted(events=(), result=combined)
        if isinstance(first.result, FeedReply) and len(outcomes) > 1:
            # Resume-safe: the cursor every partition has reached.
            feeds = [
                o.result
                for o in outcomes
                if isinstance(o, core.Accepted) and isinstance(o.result, FeedReply)
            ]
            return core.Accepted(
                events=(),
                result=FeedReply(
                    producer=first.result.producer,
                    cursor=min(r.cursor for r in feeds),
                    applied=max(r.applied for r in feeds),
                    skipped=max(r.skipped for r in feeds),
                ),
            )
        return first

    async def close(self) -> None:
        for batcher in self._batchers:
            await batcher.close()
        if self._owns_connection:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()
