"""A client workload for a real cluster: concurrent clients placing bets,
depositing, withdrawing and reading balances (a few hot accounts force
contention), and a settler that opens a new market every few seconds and
closes and settles the previous one. Every operation goes to the history.

Used by the integration tests and by `ironbook chaos`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from ironbook import core
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.chaos.history import HistoryRecorder
from ironbook.client import BadRequest, ClientConfig, GaveUp, LedgerClient, connect_ledger

SELECTIONS = 6
SETUP_CLIENT = "setup"
SETTLER_CLIENT = "settler"


async def connect_workload_client(
    endpoint: NatsEndpoint, partitions: int, *, deadline_ms: int, actor: str
) -> LedgerClient:
    """The workload's ledger client: 1 s per attempt, quick backoff, and
    retries of one command for up to `deadline_ms` (through a failover or a
    site lost), acting as `actor`."""
    return await connect_ledger(
        endpoint,
        partitions=partitions,
        config=ClientConfig(
            request_timeout_ms=1_000,
            deadline_ms=deadline_ms,
            backoff_initial_ms=20,
            backoff_max_ms=500,
        ),
        issuer=core.acting(actor),
    )


def selection_odds(selection: int) -> int:
    return 250 + 50 * selection


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    accounts: int = 40
    hot_accounts: int = 3
    hot_share: float = 0.4
    """Share of operations aimed at the hot accounts."""
    opening_deposit_minor: int = 5_000
    read_share: float = 0.05
    """Share of operations that read an account's balance."""
    settle_every_s: float | None = 4.0
    """Open a new market and settle the previous one this often (None: one market)."""
    seed: int = 0


class SetupFailed(RuntimeError):
    """The workload's accounts or first market could not be created."""


class Workload:
    """Concurrent clients on one `LedgerClient`; outcomes go to `recorder`."""

    def __init__(
        self,
        client: LedgerClient,
        recorder: HistoryRecorder | None = None,
        config: WorkloadConfig | None = None,
    ) -> None:
        self.client = client
        self.recorder = recorder or HistoryRecorder()
        self.config = config or WorkloadConfig()
        self.accounts = [f"punter-{i}" for i in range(self.config.accounts)]
        self.hot_accounts = self.accounts[: self.config.hot_accounts]
        self._market_number = 1
        self._stop = asyncio.Event()

    @property
    def market_id(self) -> str:
        """The market bets are placed on now."""
        return f"race-{self._market_number}"

    @property
    def gave_up(self) -> list[str]:
        return [op.request_id for op in self.recorder.operations if op.outcome == "info"]

    @property
    def accepted(self) -> int:
        return sum(op.outcome == "ok" and not op.is_query for op in self.recorder.operations)

    async def setup(self) -> None:
        await self._must(self._create_market(self._market_number, "setup-market"))
        for account in self.accounts:
            await self._must(core.OpenAccount(request_id=f"open-{account}", account_id=account))
            await self._must(
                core.Deposit(
                    request_id=f"seed-{account}",
                    account_id=account,
                    amount_minor=self.config.opening_deposit_minor,
                    reason="chaos workload top-up",
                )
            )

    async def _must(self, command: core.AnyCommand) -> None:
        outcome = await self._submit(SETUP_CLIENT, command)
        if not isinstance(outcome, core.Accepted):
            raise SetupFailed(f"{command.request_id}: {outcome!r}")

    async def _submit(
        self, client: str, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome | None:
        """The outcome, or None if the client gave up (recorded as `info`)."""
        invocation = self.recorder.invoke(client, command)
        try:
            outcome = await self.client.submit(command)
        except (GaveUp, BadRequest) as error:
            invocation.give_up(f"{type(error).__name__}: {error}")
            return None
        invocation.complete(outcome)
        return outcome

    def stop(self) -> None:
        """Ask every client to finish its current operation and return."""
        self._stop.set()

    async def run(self, seconds: float, clients: int = 24) -> None:
        """Run until `seconds` pass or `stop()` is called. A client that
        raises ends the run: the others are cancelled and the error is raised
        (in an ExceptionGroup)."""
        deadline = time.monotonic() + seconds
        async with asyncio.TaskGroup() as group:
            for n in range(clients):
                group.create_task(self._client_loop(n, deadline))
            if self.config.settle_every_s is not None:
                group.create_task(self._settler(deadline, self.config.settle_every_s))

    def _running(self, deadline: float) -> bool:
        return not self._stop.is_set() and time.monotonic() < deadline

    async def _client_loop(self, n: int, deadline: float) -> None:
        rng = random.Random(self.config.seed * 1_000 + n)
        name = f"c{n}"
        count = 0
        while self._running(deadline):
            count += 1
            hot = rng.random() < self.config.hot_share
            account = rng.choice(self.hot_accounts if hot else self.accounts)
            await self._submit(name, self._next_command(rng, f"{name}-{count}", account))

    def _next_command(
        self, rng: random.Random, request_id: str, account: str
    ) -> core.AnyCommand | core.AnyQuery:
        roll = rng.random()
        if roll < self.config.read_share:
            return core.GetAccount(request_id=request_id, account_id=account)
        roll = rng.random()
        if roll < 0.75:
            selection = rng.randrange(SELECTIONS)
            return core.PlaceBet(
                request_id=request_id,
                account_id=account,
                stake_minor=rng.choice((50, 100, 500, 2_000)),
                legs=(core.BetLeg(self.market_id, f"s{selection}", selection_odds(selection)),),
            )
        if roll < 0.9:
            return core.Deposit(
                request_id=request_id,
                account_id=account,
                amount_minor=700,
                reason="chaos workload top-up",
            )
        return core.Withdraw(request_id=request_id, account_id=account, amount_minor=900)

    async def _settler(self, deadline: float, every_s: float) -> None:
        """Every `every_s`: open the next market, then close and settle the
        previous one (bets still arriving for it are rightly refused)."""
        rng = random.Random(self.config.seed * 1_000 - 1)
        step = 0
        while self._running(deadline):
            await asyncio.sleep(every_s)
            if not self._running(deadline):
                return
            step += 1
            old = self._market_number
            new = old + 1
            opened = await self._submit(
                SETTLER_CLIENT, self._create_market(new, f"settler-open-{new}")
            )
            if opened is None:
                continue  # no outcome yet: the next round opens another one
            self._market_number = new
            await self._submit(
                SETTLER_CLIENT,
                core.CloseMarket(request_id=f"settler-close-{old}", market_id=f"race-{old}"),
            )
            await self._submit(
                SETTLER_CLIENT,
                core.SettleMarket(
                    request_id=f"settler-settle-{old}",
                    market_id=f"race-{old}",
                    winners=(core.Winner(selection_id=f"s{rng.randrange(SELECTIONS)}"),),
                ),
            )

    @staticmethod
    def _create_market(number: int, request_id: str) -> core.CreateMarket:
        return core.CreateMarket(
            request_id=request_id,
            market_id=f"race-{number}",
            event_id="chaos-meeting",
            name=f"Race {number}",
            selections=tuple(
                core.SelectionSpec(selection_id=f"s{i}", name=f"Horse {i}", odds=selection_odds(i))
                for i in range(SELECTIONS)
            ),
        )
