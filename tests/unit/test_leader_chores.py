"""A leader's chores: it sends `ArchiveSettled` to its own partition while
markets are past the bet retention window, a bounded number per check, and
a replica that does not lead sends nothing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from ledger_driver import DAY_MS, Ledger

from ironbook import core
from ironbook.core import LedgerConfig, SettleMarket, Winner
from ironbook.services.replica import ARCHIVE_SETTLED, Chore, run_chore

RETENTION_MS = 2 * DAY_MS


class Finished(Exception):
    """The test's clock ran out of checks."""


class VirtualClock:
    def __init__(self, now_ms: int, checks: int) -> None:
        self.now = now_ms
        self.checks_left = checks

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, ms: float) -> None:
        if not self.checks_left:
            raise Finished
        self.checks_left -= 1
        self.now += int(ms)
        await asyncio.sleep(0)


class LeaderOf:
    """The replica's seam: the leader's state, or None."""

    def __init__(self, ledger: Ledger, leading: bool) -> None:
        self.ledger = ledger
        self.leading = leading

    def leader_state(self) -> core.LedgerState | None:
        return self.ledger.state if self.leading else None


class Sequencer:
    """The partition: decides and applies each command at the clock's time."""

    def __init__(self, ledger: Ledger, clock: VirtualClock) -> None:
        self.ledger = ledger
        self.clock = clock
        self.sent: list[core.AnyCommand | core.AnyQuery] = []

    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome:
        assert partition == 0
        self.sent.append(command)
        return self.ledger.submit(command, now_ms=self.clock.now)


def settled_history(markets: int, bets_each: int) -> Ledger:
    ledger = Ledger(LedgerConfig(resettle_window_ms=DAY_MS, bet_retention_ms=RETENTION_MS))
    ledger.open_account("alice", 10**9)
    for n in range(markets):
        market_id = f"m{n}"
        ledger.create_market(market_id, {"a": 200, "b": 200})
        for _ in range(bets_each):
            ledger.bet("alice", 10, (market_id, "a", 200))
        ledger.close(market_id)
        ledger.ok(
            SettleMarket(
                request_id=ledger.request_id(), market_id=market_id, winners=(Winner("b"),)
            )
        )
    return ledger


def run(ledger: Ledger, *, leading: bool, checks: int, chore: Chore = ARCHIVE_SETTLED) -> Sequencer:
    clock = VirtualClock(now_ms=RETENTION_MS, checks=checks)
    sequencer = Sequencer(ledger, clock)

    async def main() -> None:
        with pytest.raises(Finished):
            await run_chore(sequencer, LeaderOf(ledger, leading), 0, clock, chore)

    asyncio.run(main())
    return sequencer


def test_the_leader_archives_a_backlog_then_sends_nothing() -> None:
    ledger = settled_history(markets=3, bets_each=600)
    sequencer = run(ledger, leading=True, checks=5)
    # 1,803 markets and bets, at most 500 per command.
    assert len(sequencer.sent) == 4
    assert all(isinstance(command, core.ArchiveSettled) for command in sequencer.sent)
    assert ledger.state.markets == {} and ledger.state.bets == {}
    assert (ledger.state.archived_markets, ledger.state.archived_bets) == (3, 1_800)
    assert core.check_invariants(ledger.state) == []


def test_a_check_sends_a_bounded_number_of_commands() -> None:
    ledger = settled_history(markets=3, bets_each=600)
    sequencer = run(
        ledger, leading=True, checks=1, chore=dataclasses.replace(ARCHIVE_SETTLED, per_check=2)
    )
    assert len(sequencer.sent) == 2
    assert core.archive_due(ledger.state, RETENTION_MS)


def test_a_replica_that_does_not_lead_sends_nothing() -> None:
    ledger = settled_history(markets=1, bets_each=3)
    sequencer = run(ledger, leading=False, checks=3)
    assert sequencer.sent == [] and set(ledger.state.markets) == {"m0"}


def test_nothing_is_sent_before_the_retention_window_is_over() -> None:
    ledger = settled_history(markets=1, bets_each=3)
    clock_start = RETENTION_MS - 10 * ARCHIVE_SETTLED.interval_ms
    clock = VirtualClock(now_ms=clock_start, checks=5)
    sequencer = Sequencer(ledger, clock)

    async def main() -> None:
        with pytest.raises(Finished):
            await run_chore(sequencer, LeaderOf(ledger, True), 0, clock, ARCHIVE_SETTLED)

    asyncio.run(main())
    assert sequencer.sent == []
