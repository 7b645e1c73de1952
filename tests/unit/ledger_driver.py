"""A small test driver around the pure core: decide a command, apply its
events, keep the log. Every unit test talks to the core through it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from ironbook.core import (
    HOUSE,
    STAKES_HELD,
    Accepted,
    AnyCommand,
    AnyEvent,
    AnyReply,
    BetLeg,
    CloseMarket,
    CreateMarket,
    Deposit,
    LedgerConfig,
    LedgerState,
    OpenAccount,
    Outcome,
    PlaceBet,
    PriceChangePolicy,
    Rejected,
    SelectionSpec,
    acting,
    apply,
    continuations,
    decide,
    issued,
    new_state,
)
from ironbook.core.odds import Odds

PEOPLE = acting("test")
"""Each command's principal: the role the permission table names first for it
(a bettor of the account it names, else the staff role). Tests of the
permission check itself set a principal on the command."""
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Ledger:
    """One partition's ledger, driven the way a sequencer drives it."""

    def __init__(
        self, config: LedgerConfig | None = None, now_ms: int = 0, *, continue_results: bool = True
    ) -> None:
        self.state: LedgerState = new_state(config)
        self.log: list[AnyEvent] = []
        self.now_ms = now_ms
        self.continue_results = continue_results
        """Finish every result in progress after each command, as a leader
        with nothing else to do would; False leaves that to `continue_once`."""
        self._request_numbers = itertools.count(1)

    def request_id(self) -> str:
        return f"req-{next(self._request_numbers)}"

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    def submit(self, command: AnyCommand, now_ms: int | None = None) -> Outcome:
        at_ms = self.now_ms if now_ms is None else now_ms
        outcome = self._decide_and_apply(command, at_ms)
        while self.continue_results and self.state.settlements:
            self.continue_once(at_ms)
        return outcome

    def continue_once(self, now_ms: int | None = None) -> None:
        """One slice of every result in progress, as a leader sends them."""
        for continuation in continuations(self.state):
            self._decide_and_apply(continuation, self.now_ms if now_ms is None else now_ms)

    def _decide_and_apply(self, command: AnyCommand, at_ms: int) -> Outcome:
        outcome = decide(self.state, issued(command, PEOPLE), at_ms)
        for event in outcome.events:
            apply(self.state, event)
            self.log.append(event)
        return outcome

    def ok(self, command: AnyCommand, now_ms: int | None = None) -> AnyReply:
        outcome = self.submit(command, now_ms)
        assert isinstance(outcome, Accepted), f"{command!r} was refused: {outcome!r}"
        return outcome.result

    def refused(self, command: AnyCommand, now_ms: int | None = None) -> str:
        outcome = self.submit(command, now_ms)
        assert isinstance(outcome, Rejected), f"{command!r} was accepted: {outcome!r}"
        return outcome.code

    def balance(self, account_id: str) -> int:
        return self.state.accounts[account_id].balance_minor

    def house(self) -> int:
        return self.balance(HOUSE)

    def held(self) -> int:
        return self.balance(STAKES_HELD)

    # Shorthands for the setup most tests need.

    def open_account(self, account_id: str, deposit_minor: int = 0) -> None:
        self.ok(OpenAccount(request_id=self.request_id(), account_id=account_id))
        if deposit_minor:
            self.ok(
                Deposit(
                    request_id=self.request_id(),
                    account_id=account_id,
                    amount_minor=deposit_minor,
                    reason="test top-up",
                )
            )

    def create_market(self, market_id: str, odds: Mapping[str, int]) -> None:
        selections = tuple(
            SelectionSpec(selection_id=selection_id, name=selection_id.upper(), odds=price)
            for selection_id, price in odds.items()
        )
        self.ok(
            CreateMarket(
                request_id=self.request_id(),
                market_id=market_id,
                event_id=f"event-{market_id}",
                name=market_id,
                selections=selections,
            )
        )

    def close(self, market_id: str) -> None:
        self.ok(CloseMarket(request_id=self.request_id(), market_id=market_id))

    def bet_command(
        self,
        account_id: str,
        stake_minor: int,
        *legs: tuple[str, str, Odds],
        policy: PriceChangePolicy = "none",
    ) -> PlaceBet:
        return PlaceBet(
            request_id=self.request_id(),
            account_id=account_id,
            stake_minor=stake_minor,
            legs=tuple(
                BetLeg(market_id=market_id, selection_id=selection_id, odds=odds)
                for market_id, selection_id, odds in legs
            ),
            price_change=policy,
        )

    def bet(
        self,
        account_id: str,
        stake_minor: int,
        *legs: tuple[str, str, Odds],
        policy: PriceChangePolicy = "none",
    ) -> str:
        """Place a bet that must be accepted; return its id."""
        reply = self.ok(self.bet_command(account_id, stake_minor, *legs, policy=policy))
        bet_id = getattr(reply, "bet_id", None)
        assert isinstance(bet_id, str)
        return bet_id
