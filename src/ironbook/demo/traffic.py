"""The race day's punters: the chaos workload (bets, deposits, withdrawals,
balance reads, and a settler running the undercard races), with two knobs
for the demo: how many clients are betting right now (steady, then the surge
to the off), and the big race, which takes the bets during the surge and is
closed at the off and settled.

Every operation goes to the history recorder, so the checker judges the
demo's traffic exactly as it judges a chaos run's.
"""

from __future__ import annotations

import asyncio

from ironbook import core
from ironbook.chaos.history import HistoryRecorder
from ironbook.chaos.workload import SELECTIONS, Workload, WorkloadConfig, selection_odds
from ironbook.client import LedgerClient

BIG_RACE_ID = "gold-cup"
BIG_RACE_NAME = "The Ironbook Gold Cup"
RUNNERS = (
    "Ledger Legend",
    "Quorum Queen",
    "Fencing Token",
    "Split Brain",
    "Hot Standby",
    "Durable Ack",
)
STEWARD_CLIENT = "steward"


class RaceDayWorkload(Workload):
    """Clients `c0..cN` run as in the chaos workload, but only the first
    `active_clients` of them submit; the rest wait their turn."""

    def __init__(
        self,
        client: LedgerClient,
        recorder: HistoryRecorder,
        config: WorkloadConfig,
        active_clients: int = 0,
    ) -> None:
        super().__init__(client, recorder, config)
        self.active_clients = active_clients
        self.big_race_open = False
        # Set to wake waiting clients when the number of active ones changes.
        self._turns = asyncio.Event()

    @property
    def market_id(self) -> str:
        if self.big_race_open:
            return BIG_RACE_ID
        return super().market_id

    def set_active_clients(self, count: int) -> None:
        self.active_clients = max(0, count)
        self._turns.set()

    async def _submit(
        self, client: str, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome | None:
        index = _client_index(client)
        while index is not None and index >= self.active_clients and not self._stop.is_set():
            self._turns.clear()
            await self._turns.wait()
        return await super()._submit(client, command)

    def stop(self) -> None:
        super().stop()
        self._turns.set()

    async def setup(self) -> None:
        await super().setup()
        await self._must(
            core.CreateMarket(
                request_id=f"open-{BIG_RACE_ID}",
                market_id=BIG_RACE_ID,
                event_id="race-day",
                name=BIG_RACE_NAME,
                selections=tuple(
                    core.SelectionSpec(
                        selection_id=f"s{i}", name=RUNNERS[i], odds=selection_odds(i)
                    )
                    for i in range(SELECTIONS)
                ),
            )
        )

    async def the_off(self, winner: int) -> tuple[core.Outcome | None, core.Outcome | None]:
        """Close the big race (bets still arriving for it are refused), then
        settle it with `winner` first past the post."""
        self.big_race_open = False
        closed = await self._submit(
            STEWARD_CLIENT,
            core.CloseMarket(request_id=f"close-{BIG_RACE_ID}", market_id=BIG_RACE_ID),
        )
        settled = await self._submit(
            STEWARD_CLIENT,
            core.SettleMarket(
                request_id=f"settle-{BIG_RACE_ID}",
                market_id=BIG_RACE_ID,
                winners=(core.Winner(selection_id=f"s{winner}"),),
            ),
        )
        return closed, settled


def _client_index(client: str) -> int | None:
    """The number of a betting client (`c12` -> 12); None for the others."""
    if client.startswith("c") and client[1:].isdigit():
        return int(client[1:])
    return None
