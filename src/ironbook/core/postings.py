"""What the ledger's events write into players' histories: the postings to
player accounts (system accounts left out), each with its kind and
reference. Read by the history projection and by the audit tools that
rebuild balances from the log."""

from __future__ import annotations

from ironbook.core import events as ev
from ironbook.core.events import AnyEvent
from ironbook.core.state import SYSTEM_PREFIX


def player_postings(event: AnyEvent) -> list[tuple[str, int, str, str]]:
    """The entries an event writes into players' histories, in posting order:
    (account id, signed amount, kind, reference)."""
    if isinstance(event, ev.BetsReleased):
        # One refund posting per rejected bet, in the order of `rejected`.
        refunds = [p for p in event.postings if not p[0].startswith(SYSTEM_PREFIX)]
        return [
            (account_id, amount_minor, "bet_refund", bet_id)
            for (account_id, amount_minor), (bet_id, _code) in zip(
                refunds, event.rejected, strict=True
            )
        ]
    described = _kind_and_reference(event)
    if described is None:
        return []
    kind, reference = described
    return [
        (account_id, amount_minor, kind, reference)
        for account_id, amount_minor in event.postings
        if not account_id.startswith(SYSTEM_PREFIX)
    ]


def _kind_and_reference(event: AnyEvent) -> tuple[str, str] | None:
    if isinstance(event, ev.Deposited):
        return "deposit", event.transaction_id
    if isinstance(event, ev.Withdrawn):
        return "withdrawal", event.transaction_id
    if isinstance(event, ev.BalanceAdjusted):
        return "adjustment", event.transaction_id
    if isinstance(event, ev.BetPlaced):
        return "bet", event.bet_id
    if isinstance(event, ev.MarketResulted):
        return "settlement", event.market_id
    if isinstance(event, ev.BetCashedOut):
        return "cash_out", event.bet_id
    return None
