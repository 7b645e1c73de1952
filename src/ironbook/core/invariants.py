"""The ledger's invariants, checked over a whole state (tests, the simulator,
the chaos checker and `ironbook audit` all call this one function)."""

from __future__ import annotations

from ironbook.core.state import STAKES_HELD, LedgerState


def check_invariants(state: LedgerState) -> list[str]:
    """Every broken invariant, described; an empty list means all hold."""
    problems: list[str] = []
    total_minor = sum(account.balance_minor for account in state.accounts.values())
    if total_minor != 0:
        problems.append(f"balances sum to {total_minor}, not 0")
    for account in state.accounts.values():
        if account.kind == "player" and account.balance_minor < 0:
            problems.append(f"player {account.account_id} balance {account.balance_minor} < 0")
    # A held (pending) in-play bet's stake is held and its liability reserved
    # like an open bet's.
    live = ("open", "pending")
    open_stakes_minor = sum(bet.staked_minor for bet in state.bets.values() if bet.status in live)
    held_minor = state.accounts[STAKES_HELD].balance_minor
    if held_minor != open_stakes_minor:
        problems.append(f"stakes held {held_minor} != open and pending stakes {open_stakes_minor}")
    pending_ids = sorted(bet.bet_id for bet in state.bets.values() if bet.status == "pending")
    if sorted(state.pending_bets) != state.pending_bets:
        problems.append("the held bets are not in release order")
    if sorted(bet_id for _, bet_id in state.pending_bets) != pending_ids:
        problems.append("the held bets list does not match the pending bets")
    problems.extend(_liability_problems(state))
    return problems


def _liability_problems(state: LedgerState) -> list[str]:
    """Every live bet's liability is reserved on its selections, each
    market's worst case is its largest selection liability, and every bet's
    markets are in the state (archiving takes a market only with its bets)."""
    problems: list[str] = []
    live = ("open", "pending")
    expected_liability: dict[tuple[str, str], int] = {}
    for bet in state.bets.values():
        for leg in bet.legs:
            if leg.market_id not in state.markets:
                problems.append(f"bet {bet.bet_id} has a leg on {leg.market_id}, not in the state")
        if bet.status in live:
            for leg in bet.legs:
                key = (leg.market_id, leg.selection_id)
                expected_liability[key] = expected_liability.get(key, 0) + bet.liability_minor
    for market in state.markets.values():
        for selection in market.selections.values():
            expected_minor = expected_liability.get((market.market_id, selection.selection_id), 0)
            if selection.liability_minor != expected_minor:
                problems.append(
                    f"{market.market_id}/{selection.selection_id} liability "
                    f"{selection.liability_minor} != open bets' {expected_minor}"
                )
        worst_minor = max((s.liability_minor for s in market.selections.values()), default=0)
        if market.max_liability_minor != worst_minor:
            problems.append(
                f"{market.market_id} max liability {market.max_liability_minor} "
                f"!= its largest selection liability {worst_minor}"
            )
    return problems
