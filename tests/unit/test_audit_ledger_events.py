"""Which ledger events the significant-event log records, and how."""

from __future__ import annotations

import msgspec
from ledger_driver import Ledger

from ironbook.adapters.audit.ledger_events import UNRECORDED, significant
from ironbook.core import Principal, SelfExclude, VoidMarket
from ironbook.core.events import AnyEvent


def _recorded(events: list[AnyEvent]) -> list[tuple[str, str, str, str]]:
    found = [significant(event) for event in events]
    return [(s.kind, s.actor, s.reason, s.target) for s in found if s is not None]


def test_staff_money_and_market_actions_are_significant_bets_are_not() -> None:
    ledger = Ledger(now_ms=1_000)
    ledger.open_account("alice", deposit_minor=5_000)
    ledger.create_market("m1", {"home": 250, "away": 160})
    ledger.bet("alice", 100, ("m1", "home", 250))
    ledger.ok(
        VoidMarket(
            request_id=ledger.request_id(),
            market_id="m1",
            actor="trader:tom",
            reason="abandoned",
            principal=Principal(subject="trader:tom", role="trader"),
        )
    )
    ledger.ok(SelfExclude(request_id=ledger.request_id(), account_id="alice", days=30))
    recorded = _recorded(ledger.log)
    # The test driver's principals, and the reason the driver's deposit gives.
    assert recorded[0] == ("deposit", "test:cashier", "test top-up", "account alice")
    assert recorded[1] == ("market_created", "test:trader", "", "market m1")
    assert ("market_void", "trader:tom", "abandoned", "market m1") in recorded
    assert recorded[-1][0] == "self_exclusion"
    assert not any(kind.startswith("bet") for kind, *_ in recorded)
    assert len(recorded) == 4
    assert all(s.at_ms == 1_000 for s in map(significant, ledger.log) if s is not None)


def test_an_entry_logged_before_principals_reads_unrecorded() -> None:
    ledger = Ledger(now_ms=1_000)
    ledger.open_account("alice", deposit_minor=5_000)
    [deposited] = [e for e in ledger.log if type(e).__name__ == "Deposited"]
    old = significant(msgspec.structs.replace(deposited, actor="", reason=""))
    assert old is not None and (old.actor, old.reason) == (UNRECORDED, "")
