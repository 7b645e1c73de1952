"""Seeded client workloads: commands that contend (shared accounts, one
market) so that interleavings matter and some commands are rightly refused."""

from __future__ import annotations

import random

from ironbook import core

MARKET_ID = "m-1"
SELECTIONS = (("home", 200), ("draw", 340), ("away", 400))


def make_workload(
    rng: random.Random, *, clients: int, commands_per_client: int, accounts: int
) -> list[list[core.AnyCommand]]:
    """One command list per client; client 0 opens the market and settles it."""
    account_ids = [f"acct-{n}" for n in range(accounts)]
    workloads: list[list[core.AnyCommand]] = []
    for client in range(clients):
        commands: list[core.AnyCommand] = []

        def request_id(client: int = client, commands: list[core.AnyCommand] = commands) -> str:
            return f"c{client}-{len(commands)}"

        if client == 0:
            commands.append(
                core.CreateMarket(
                    request_id=request_id(),
                    market_id=MARKET_ID,
                    event_id="ev-1",
                    name="Match result",
                    selections=tuple(
                        core.SelectionSpec(selection_id=s, name=s, odds=odds)
                        for s, odds in SELECTIONS
                    ),
                )
            )
        own = account_ids[client % accounts]
        commands.append(core.OpenAccount(request_id=request_id(), account_id=own))
        commands.append(
            core.Deposit(
                request_id=request_id(),
                account_id=own,
                amount_minor=rng.randint(500, 5_000),
                reason="simulated top-up",
            )
        )
        while len(commands) < commands_per_client:
            account = rng.choice(account_ids)
            roll = rng.random()
            if roll < 0.3:
                selection, odds = rng.choice(SELECTIONS)
                commands.append(
                    core.PlaceBet(
                        request_id=request_id(),
                        account_id=account,
                        stake_minor=rng.randint(5, 2_500),
                        legs=(core.BetLeg(market_id=MARKET_ID, selection_id=selection, odds=odds),),
                        price_change="any",
                    )
                )
            elif roll < 0.5:
                commands.append(
                    core.Deposit(
                        request_id=request_id(),
                        account_id=account,
                        amount_minor=rng.randint(100, 3_000),
                        reason="simulated top-up",
                    )
                )
            elif roll < 0.7:
                commands.append(
                    core.Withdraw(
                        request_id=request_id(),
                        account_id=account,
                        amount_minor=rng.randint(100, 6_000),
                    )
                )
            elif roll < 0.8:
                commands.append(core.OpenAccount(request_id=request_id(), account_id=account))
            elif roll < 0.9:
                commands.append(core.SuspendMarket(request_id=request_id(), market_id=MARKET_ID))
            else:
                commands.append(core.ResumeMarket(request_id=request_id(), market_id=MARKET_ID))
        if client == 0:
            commands.append(core.CloseMarket(request_id=request_id(), market_id=MARKET_ID))
            commands.append(
                core.SettleMarket(
                    request_id=request_id(),
                    market_id=MARKET_ID,
                    winners=(core.Winner(selection_id=rng.choice(SELECTIONS)[0]),),
                )
            )
        workloads.append(commands)
    return workloads
