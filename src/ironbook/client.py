"""The ledger client: submit commands to the partition leaders over NATS.

    client = await LedgerClient.connect("nats://127.0.0.1:4222", partitions=1)
    outcome = await client.submit(core.PlaceBet(...))

Account commands go to the partition that owns the account (a stable hash).
Market commands go to every partition, since each partition's log carries its
own copy of every market; the replies are combined. On a timeout or when no
leader answers, a command is resent with the same request id, with jittered
exponential backoff, until an overall deadline: a failover shows up as
latency, never as an error or a duplicate.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.nats.provision import connect_nats
from ironbook.adapters.nats.transport import NatsRequestClient
from ironbook.core.events import SettlementReply
from ironbook.replication.client import BadRequest, ClientConfig, GaveUp
from ironbook.replication.client import LedgerClient as PartitionClient

__all__ = ["BadRequest", "ClientConfig", "GaveUp", "LedgerClient"]

_MARKET_COMMANDS = (
    core.CreateMarket,
    core.UpdatePrices,
    core.SuspendMarket,
    core.ResumeMarket,
    core.CloseMarket,
    core.SettleMarket,
    core.VoidMarket,
    core.ResettleMarket,
)


class LedgerClient:
    def __init__(
        self,
        nc: NatsClient,
        *,
        partitions: int,
        config: ClientConfig | None = None,
        owns_connection: bool = False,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._nc = nc
        self._owns_connection = owns_connection
        self.partitions = partitions
        clock = SystemClock()
        rng = random.Random()
        self._clients = [
            PartitionClient(
                NatsRequestClient(nc, partition),
                clock=clock,
                rng=rng,
                config=config or ClientConfig(),
            )
            for partition in range(partitions)
        ]

    @classmethod
    async def connect(
        cls, nats_url: str, *, partitions: int = 1, config: ClientConfig | None = None
    ) -> LedgerClient:
        nc = await connect_nats(nats_url, name="ironbook-client")
        return cls(nc, partitions=partitions, config=config, owns_connection=True)

    @property
    def attempts(self) -> int:
        """Requests sent, retries included."""
        return sum(client.attempts for client in self._clients)

    def partition_for(self, account_id: str) -> int:
        return core.partition_of(account_id, self.partitions)

    async def submit(self, command: core.AnyCommand) -> core.Outcome:
        """The durable outcome. Raises `GaveUp` past the deadline (the command
        may or may not have been applied: submit it again to find out)."""
        if isinstance(command, _MARKET_COMMANDS):
            return await self._broadcast(command)
        account_id = getattr(command, "account_id", None)
        assert isinstance(account_id, str), f"{type(command).__name__} names no account"
        return await self._clients[self.partition_for(account_id)].submit(command)

    async def submit_many(self, commands: Sequence[core.AnyCommand]) -> list[core.Outcome]:
        """Submit concurrently; outcomes in the order of `commands`."""
        return list(await asyncio.gather(*(self.submit(command) for command in commands)))

    async def _broadcast(self, command: core.AnyCommand) -> core.Outcome:
        outcomes = await asyncio.gather(*(client.submit(command) for client in self._clients))
        for outcome in outcomes:
            if isinstance(outcome, core.Rejected):
                return outcome
        first = outcomes[0]
        assert isinstance(first, core.Accepted)
        if isinstance(first.result, SettlementReply) and len(outcomes) > 1:
            replies = [o.result for o in outcomes if isinstance(o, core.Accepted)]
            combined = SettlementReply(
                market_id=first.result.market_id,
                status=first.result.status,
                bets_affected=sum(
                    r.bets_affected for r in replies if isinstance(r, SettlementReply)
                ),
                paid_minor=sum(r.paid_minor for r in replies if isinstance(r, SettlementReply)),
            )
            return core.Accepted(events=(), result=combined)
        return first

    async def close(self) -> None:
        if self._owns_connection:
            await self._nc.drain()
