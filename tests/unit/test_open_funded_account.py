"""`open_funded_account`: an account opened and funded, or a clear refusal."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from ironbook import core
from ironbook.client import LedgerClient, NotAccepted, open_funded_account
from ironbook.core.events import AccountReply

ACCEPTED = core.Accepted(events=(), result=AccountReply(account_id="a-1", balance_minor=0))


class _Ledger:
    """Answers each command with the next outcome, remembering the commands."""

    def __init__(self, *outcomes: core.Outcome) -> None:
        self.outcomes = list(outcomes)
        self.commands: list[core.AnyCommand] = []

    async def submit(self, command: core.AnyCommand) -> core.Outcome:
        self.commands.append(command)
        return self.outcomes.pop(0)


def test_the_account_is_opened_then_funded() -> None:
    ledger = _Ledger(ACCEPTED, ACCEPTED)
    asyncio.run(open_funded_account(cast(LedgerClient, ledger), "a-1", 1_000, "top-up"))
    opened, funded = ledger.commands
    assert isinstance(opened, core.OpenAccount) and opened.account_id == "a-1"
    assert isinstance(funded, core.Deposit)
    assert (funded.account_id, funded.amount_minor, funded.reason) == ("a-1", 1_000, "top-up")
    assert (opened.request_id, funded.request_id) == ("open-a-1", "deposit-a-1")


def test_a_refusal_is_raised_with_the_command_and_stops_there() -> None:
    refused = core.Rejected(code="account_exists", message="account a-1 exists")
    ledger = _Ledger(refused)
    with pytest.raises(NotAccepted, match="open-a-1"):
        asyncio.run(open_funded_account(cast(LedgerClient, ledger), "a-1", 1_000, "top-up"))
    assert len(ledger.commands) == 1
