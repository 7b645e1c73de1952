"""The ledger client: a thin async driver of `ClientMachine` over a
`CommandTransport`.

    client = LedgerClient(transport, partitions=2, clock=clock, rng=rng)
    outcome = await client.submit(core.PlaceBet(...))
    await client.close()

Every decision (which partition, which commands travel together, when to
resend, when to give up) is the machine's; the driver only carries batch
requests, reads the clock, and wakes the machine when it asked to be woken.
Production drives it over NATS (`ironbook.client`), the simulator over its
simulated network, so both run the same client.

The client owns one task, started by the first submit: it holds the
TaskGroup in which every batch request runs, and `close` ends it. Submits
made in the same event-loop iteration are handed to the machine together, so
concurrent callers share batch requests.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence

from ironbook import core
from ironbook.replication.client import (
    BatchConfig,
    ClientConfig,
    ClientMachine,
    Send,
)
from ironbook.replication.concurrency import cancel_and_wait
from ironbook.replication.interfaces import (
    Clock,
    CommandTransport,
    MalformedReply,
    NoResponders,
    ReplicationError,
    RequestTimeout,
    TransportError,
)


class ClientStopped(ReplicationError):
    """The client was closed, or its request machinery failed (the cause is
    chained), before the command's outcome was known."""


class LedgerClient:
    def __init__(
        self,
        transport: CommandTransport,
        *,
        partitions: int,
        clock: Clock,
        rng: random.Random,
        config: ClientConfig | None = None,
        batching: BatchConfig | None = None,
        issuer: core.Issuer | None = None,
    ) -> None:
        self._machine = ClientMachine(
            partitions=partitions,
            config=config or ClientConfig(),
            batching=batching or BatchConfig(),
            rng=rng,
            issuer=issuer,
        )
        self._transport = transport
        self._clock = clock
        self._waiting: dict[int, asyncio.Future[core.Outcome]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ms: int | None = None
        self._pump_scheduled = False
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def partitions(self) -> int:
        return self._machine.partitions

    @property
    def attempts(self) -> int:
        """Commands sent, resends included."""
        return self._machine.attempts

    @property
    def requests(self) -> int:
        """Batch requests sent (each carries one or more commands)."""
        return self._machine.requests

    @property
    def resends(self) -> Counter[str]:
        """Commands sent again, by reason."""
        return Counter(self._machine.resends)

    def partition_for(self, account_id: str) -> int:
        return core.partition_of(account_id, self.partitions)

    async def submit(self, command: core.AnyCommand | core.AnyQuery) -> core.Outcome:
        """The durable outcome. Raises `GaveUp` past the deadline (the command
        may or may not have been applied: submit it again to find out) and
        `BadRequest` if the leader cannot decode it. A query goes to the one
        partition that can answer it, a market command to every partition."""
        self._check_open()
        ticket = self._machine.submit(command, self._clock.now_ms())
        return await self._outcome(ticket, self._expect(ticket))

    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome:
        """Send `command` to one partition, without routing: for commands
        about a partition itself (`ReleaseBets`) and per-partition reads
        (`GetFeedCursor`). Same retries and deadline as `submit`."""
        self._check_open()
        ticket = self._machine.submit_to(partition, command, self._clock.now_ms())
        return await self._outcome(ticket, self._expect(ticket))

    async def submit_many(self, commands: Sequence[core.AnyCommand]) -> list[core.Outcome]:
        """Submit together; outcomes in the order of `commands`. The first
        error is raised and the commands still open are abandoned."""
        self._check_open()
        now_ms = self._clock.now_ms()
        tickets = [self._machine.submit(command, now_ms) for command in commands]
        futures = [self._expect(ticket) for ticket in tickets]
        try:
            return [await future for future in futures]
        finally:
            for ticket, future in zip(tickets, futures, strict=True):
                if not future.done():
                    self._abandon(ticket, future)

    async def close(self) -> None:
        """Stop: callers still waiting get `ClientStopped`; the transport is
        closed."""
        self._closed = True
        self._stopping.set()
        if self._runner is not None:
            await cancel_and_wait([self._runner])
        self._fail_waiting(ClientStopped("the ledger client was closed"))
        await self._transport.close()

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # Driving the machine.

    def _check_open(self) -> None:
        if self._failure is not None:
            raise ClientStopped("the ledger client failed") from self._failure
        if self._closed:
            raise ClientStopped("the ledger client is closed")

    def _expect(self, ticket: int) -> asyncio.Future[core.Outcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[core.Outcome] = loop.create_future()
        self._waiting[ticket] = future
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        if not self._pump_scheduled:
            self._pump_scheduled = True
            loop.call_soon(self._scheduled_pump)
        return future

    async def _outcome(self, ticket: int, future: asyncio.Future[core.Outcome]) -> core.Outcome:
        try:
            return await future
        finally:
            if not future.done():
                self._abandon(ticket, future)

    def _abandon(self, ticket: int, future: asyncio.Future[core.Outcome]) -> None:
        self._machine.cancel(ticket)
        self._waiting.pop(ticket, None)
        future.cancel()

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._pump()
                await self._stopping.wait()
        except Exception as error:
            self._failure = error
            self._fail_waiting(ClientStopped("the ledger client failed"), cause=error)
            raise
        finally:
            self._group = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _timer_pump(self) -> None:
        self._timer = None
        self._pump()

    def _pump(self) -> None:
        """Let the machine catch up with the clock and act on what it says."""
        group = self._group
        if group is None:
            return  # the runner pumps once it holds its TaskGroup
        now_ms = self._clock.now_ms()
        step = self._machine.poll(now_ms)
        for done in step.resolved:
            future = self._waiting.pop(done.ticket, None)
            if future is None or future.done():
                continue
            if isinstance(done.result, ReplicationError):
                future.set_exception(done.result)
            else:
                future.set_result(done.result)
        for send in step.sends:
            group.create_task(self._send(send))
        wake_at_ms = step.wake_at_ms
        if wake_at_ms != self._timer_at_ms or (self._timer is None and wake_at_ms is not None):
            self._arm_timer(wake_at_ms, now_ms)

    def _arm_timer(self, wake_at_ms: int | None, now_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at_ms = wake_at_ms
        if wake_at_ms is not None:
            delay_s = max(0, wake_at_ms - now_ms) / 1000
            self._timer = asyncio.get_running_loop().call_later(delay_s, self._timer_pump)

    async def _send(self, send: Send) -> None:
        machine = self._machine
        try:
            replies = await self._transport.request(
                send.partition, send.family, send.payloads, timeout_ms=send.timeout_ms
            )
        except NoResponders:
            machine.request_failed(send.request_no, "no_responders", self._clock.now_ms())
        except RequestTimeout:
            machine.request_failed(send.request_no, "timeout", self._clock.now_ms())
        except MalformedReply:
            machine.request_failed(send.request_no, "malformed", self._clock.now_ms())
        except TransportError:
            machine.request_failed(send.request_no, "transport", self._clock.now_ms())
        else:
            machine.reply_received(send.request_no, replies, self._clock.now_ms())
        self._pump()

    def _fail_waiting(self, error: ClientStopped, cause: BaseException | None = None) -> None:
        waiting = list(self._waiting.items())
        self._waiting.clear()
        for ticket, future in waiting:
            self._machine.cancel(ticket)
            if not future.done():
                stopped = ClientStopped(str(error))
                stopped.__cause__ = cause
                future.set_exception(stopped)
