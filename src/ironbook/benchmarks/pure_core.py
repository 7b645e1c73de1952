"""Micro-benchmark: decide + apply rate for bet placement in the pure core.

This is the ceiling for one partition's sequencer: no I/O, one core.

    ironbook bench core [--bets N] [--accounts N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from ironbook import core
from ironbook.benchmarks.common import command_line, machine_info

BENCH = core.acting("bench")
"""The principal of each command, as the gateway would have set it."""


def setup_state(accounts: int) -> tuple[core.LedgerState, list[str]]:
    """A state with one 12-runner market and `accounts` funded accounts."""
    state = core.new_state(core.LedgerConfig(max_liability_minor=10**15))
    now_ms = 1_000
    market = core.CreateMarket(
        request_id="m",
        market_id="race-1",
        event_id="ascot-1430",
        name="Win",
        selections=tuple(
            core.SelectionSpec(selection_id=f"h{i}", name=f"Horse {i}", odds=250 + i * 10)
            for i in range(12)
        ),
    )
    account_ids = [f"acct-{i}" for i in range(accounts)]
    setup: list[core.AnyCommand] = [market]
    for account_id in account_ids:
        setup.append(core.OpenAccount(request_id=f"o-{account_id}", account_id=account_id))
        setup.append(
            core.Deposit(
                request_id=f"d-{account_id}",
                account_id=account_id,
                amount_minor=10**9,
                reason="benchmark top-up",
            )
        )
    for command in setup:
        outcome = core.decide(state, core.issued(command, BENCH), now_ms)
        assert isinstance(outcome, core.Accepted), outcome
        for event in outcome.events:
            core.apply(state, event)
    return state, account_ids


def bet_command(n: int, account_ids: list[str]) -> core.AnyCommand:
    """The `n`th bet on the market of `setup_state`."""
    return core.issued(
        core.PlaceBet(
            request_id=f"bet-{n}",
            account_id=account_ids[n % len(account_ids)],
            stake_minor=100 + n % 900,
            legs=(
                core.BetLeg(
                    market_id="race-1", selection_id=f"h{n % 12}", odds=250 + (n % 12) * 10
                ),
            ),
            price_change="none",
        ),
        BENCH,
    )


def run(bets: int, accounts: int) -> dict[str, object]:
    load_at_start = os.getloadavg()
    state, account_ids = setup_state(accounts)
    commands = [bet_command(n, account_ids) for n in range(bets)]
    decide, apply = core.decide, core.apply
    accepted = 0
    started = time.perf_counter()
    for n, command in enumerate(commands):
        outcome = decide(state, command, 2_000 + n // 1000)
        for event in outcome.events:
            apply(state, event)
        accepted += isinstance(outcome, core.Accepted)
    seconds = time.perf_counter() - started
    assert accepted == bets, f"only {accepted} of {bets} accepted"
    assert core.check_invariants(state) == []
    return {
        "benchmark": "core.decide_apply.place_bet",
        "bets": bets,
        "accounts": accounts,
        "seconds": round(seconds, 4),
        "bets_per_s": round(bets / seconds),
        "us_per_bet": round(seconds / bets * 1e6, 3),
        "python": platform.python_version(),
        "machine": machine_info(load_at_start),
        "command": command_line(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench core",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bets", type=int, default=200_000, help="bets to place (default 200000)")
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts (default 10000)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    result = run(args.bets, args.accounts)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['bets_per_s']:,} bets/s ({result['us_per_bet']} µs per decide+apply)")
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
