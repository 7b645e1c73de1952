"""Which ledger events are significant, and how they read in the
significant-event log: money moved by staff, limits and exclusions, and
every market action (create, suspend, close, price override, settle, void,
resettle, rollback), each with its actor and reason.

Every event records `actor` (the subject of the principal that issued the
command) and, for staff money and market actions, `reason`; entries logged
before principals show `unrecorded`. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ironbook import core
from ironbook.core import events as ev

UNRECORDED = "unrecorded"


@dataclass(frozen=True, slots=True)
class Significant:
    kind: str
    actor: str
    reason: str
    target: str
    detail: str
    at_ms: int


def _who(event: core.AnyEvent) -> tuple[str, str]:
    actor = getattr(event, "actor", "") or UNRECORDED
    reason = getattr(event, "reason", "") or ""
    return str(actor), str(reason)


def significant(event: core.AnyEvent) -> Significant | None:
    """The significant-event view of one ledger event, or None."""
    actor, reason = _who(event)

    def make(kind: str, target: str, detail: str) -> Significant:
        return Significant(kind, actor, reason, target, detail, event.at_ms)

    match event:
        case ev.Deposited():
            return make("deposit", f"account {event.account_id}",
                        f"{event.amount_minor} minor units, {event.transaction_id}")  # fmt: skip
        case ev.Withdrawn():
            return make("withdrawal", f"account {event.account_id}",
                        f"{event.amount_minor} minor units, {event.transaction_id}")  # fmt: skip
        case ev.BalanceAdjusted():
            return make("balance_adjustment", f"account {event.account_id}",
                        f"{event.amount_minor} minor units, {event.transaction_id}")  # fmt: skip
        case ev.DepositLimitsSet():
            changes = ", ".join(f"{c.period} {c.limit_minor}" for c in event.changes)
            return make("limit_change", f"account {event.account_id}", changes)
        case ev.SelfExcluded():
            return make("self_exclusion", f"account {event.account_id}",
                        f"until {event.until_ms}")  # fmt: skip
        case ev.MarketCreated():
            return make("market_created", f"market {event.market_id}", event.name)
        case ev.MarketStatusChanged():
            return make("market_status", f"market {event.market_id}", event.status)
        case ev.PricesUpdated():
            prices = ", ".join(str(price) for price in event.prices)[:500]
            return make("price_override", f"market {event.market_id}", prices)
        case ev.MarketResulted():
            if event.slice_from != 0:
                return None  # One event per result: its first slice.
            bets = event.slice_total or len(event.bets)
            return make(
                f"market_{event.kind}", f"market {event.market_id}", f"{event.status}, {bets} bets"
            )
        case ev.ProducerStatusChanged():
            state = "down" if event.down else "up"
            return make("feed_producer", f"producer {event.producer}", state)
    return None
