"""Per-market liability, and a bet's validation cost bounded by its legs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ledger_driver import Ledger

from ironbook.core import (
    Accepted,
    LedgerConfig,
    SettleMarket,
    VoidMarket,
    Winner,
    acting,
    check_invariants,
    decide,
    issued,
)
from ironbook.core.state import Selection

PEOPLE = acting("test")
"""Each command's principal (see `core.acting`)."""


def test_market_liability_is_its_worst_selection() -> None:
    ledger = Ledger(LedgerConfig(max_liability_minor=10_000, max_market_liability_minor=2_000))
    ledger.open_account("alice", 100_000)
    ledger.create_market("m1", {"a": 300, "b": 300, "c": 200})
    ledger.bet("alice", 500, ("m1", "a", 300))  # a: 1,000
    ledger.bet("alice", 200, ("m1", "b", 300))  # b: 400
    market = ledger.state.markets["m1"]
    assert market.max_liability_minor == 1_000
    ledger.bet("alice", 500, ("m1", "a", 300))  # a: 2,000, the cap
    assert market.max_liability_minor == 2_000
    assert ledger.refused(ledger.bet_command("alice", 10, ("m1", "a", 300))) == (
        "liability_exceeded"
    )
    outcome = ledger.submit(ledger.bet_command("alice", 2_100, ("m1", "c", 200)))
    assert getattr(outcome, "code", None) == "liability_exceeded"
    assert "market 'm1'" in getattr(outcome, "message", "")
    ledger.bet("alice", 500, ("m1", "c", 200))  # c: 500, under the market's worst case
    assert check_invariants(ledger.state) == []


def test_the_selection_cap_still_applies() -> None:
    ledger = Ledger(LedgerConfig(max_liability_minor=1_000))
    ledger.open_account("alice", 100_000)
    ledger.create_market("m1", {"a": 300})
    ledger.bet("alice", 500, ("m1", "a", 300))
    outcome = ledger.submit(ledger.bet_command("alice", 10, ("m1", "a", 300)))
    assert getattr(outcome, "code", None) == "liability_exceeded"
    assert "selection 'a'" in getattr(outcome, "message", "")


def test_settling_or_voiding_frees_the_market() -> None:
    ledger = Ledger(LedgerConfig(max_market_liability_minor=2_000))
    ledger.open_account("alice", 100_000)
    ledger.create_market("m1", {"a": 300, "b": 300})
    ledger.create_market("m2", {"x": 300})
    ledger.bet("alice", 1_000, ("m1", "a", 300))
    acca = ledger.bet("alice", 100, ("m1", "b", 300), ("m2", "x", 300))
    assert ledger.state.markets["m1"].max_liability_minor == 2_000
    assert ledger.state.markets["m2"].max_liability_minor == 800
    ledger.ok(VoidMarket(request_id="v", market_id="m1", actor="ops", reason="abandoned"))
    # The accumulator goes on (the void leg at 1.00), still reserving m2.
    assert ledger.state.bets[acca].status == "open"
    assert ledger.state.markets["m1"].max_liability_minor == 800
    assert ledger.state.markets["m2"].max_liability_minor == 800
    ledger.close("m2")
    ledger.ok(SettleMarket(request_id="s", market_id="m2", winners=(Winner("x"),)))
    assert ledger.state.markets["m1"].max_liability_minor == 0
    assert ledger.state.markets["m2"].max_liability_minor == 0
    assert check_invariants(ledger.state) == []


class _NoIteration(dict[str, Selection]):
    """A market's selections that may be looked up but never walked."""

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the bet path walked a market's selections")

    def values(self) -> Any:
        raise AssertionError("the bet path walked a market's selections")

    def items(self) -> Any:
        raise AssertionError("the bet path walked a market's selections")

    def __len__(self) -> int:
        raise AssertionError("the bet path measured a market's selections")


class _NoWalk(list[str]):
    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the bet path walked a market's bets")

    def __len__(self) -> int:
        raise AssertionError("the bet path measured a market's bets")


@pytest.mark.parametrize("policy", ["none", "any"])
def test_a_bet_on_a_huge_market_does_not_walk_it(policy: str) -> None:
    """The Kambi lesson: 500 selections and 10,000 open bets on one market do
    not make a bet on it cost more than a few look-ups per leg."""
    ledger = Ledger(LedgerConfig(max_stake_minor=10**9))
    ledger.open_account("whale", 10**9)
    ledger.create_market("final", {f"s{i}": 1_000 for i in range(500)})
    ledger.create_market("other", {"x": 200})
    for number in range(10_000):
        ledger.bet("whale", 10, ("final", f"s{number % 500}", 1_000))
    market = ledger.state.markets["final"]
    assert len(market.bet_ids) == 10_000
    market.selections = _NoIteration(market.selections)
    market.bet_ids = _NoWalk(market.bet_ids)
    command = ledger.bet_command(
        "whale",
        100,
        ("final", "s7", 1_000),
        ("other", "x", 200),
        policy=policy,  # type: ignore[arg-type]
    )
    outcome = decide(ledger.state, issued(command, PEOPLE), ledger.now_ms)
    assert isinstance(outcome, Accepted)
