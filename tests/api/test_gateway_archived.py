"""Archived bets and markets are still served by id: the ledger archives a
settled market and its bets a retention window after the result, the
history projector folds the `SettledArchived` entry, and the gateway's
`GET /v1/bets/{id}` and `GET /v1/markets/{id}` fall back to it (the pure
core as the ledger, the real projector store, the app in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from test_gateway_fast_path import NoAudit, NoOdds, StubClaims, StubRevoker

from ironbook import core
from ironbook.core.events import BetPlaced
from ironbook.replication.batch import encode_batch
from ironbook.replication.interfaces import LogEntry
from ironbook.services.gateway.app import create_app
from ironbook.services.gateway.auth import (
    load_verifier,
    local_keys_dir,
    local_signing_key,
    mint_token,
)
from ironbook.services.gateway.history import (
    ArchivedReply,
    ArchivedRequest,
    ArchivedView,
    HistoryError,
    HistoryReply,
    HistoryRequest,
    HistoryStore,
    HistoryUnavailable,
)
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.runtime import Gateway
from ironbook.settings import GatewaySettings

RETENTION_MS = core.LedgerConfig().bet_retention_ms


class PureLedger:
    """One partition's ledger: the pure core, every command logged."""

    def __init__(self) -> None:
        self.state = core.new_state()
        self.log: list[list[core.AnyEvent]] = []
        self.now_ms = 0

    def run(self, command: core.AnyCommand, principal: core.Principal) -> core.Outcome:
        outcome = core.decide(self.state, core.issued(command, principal), self.now_ms)
        for event in outcome.events:
            core.apply(self.state, event)
        if outcome.events:
            self.log.append(list(outcome.events))
        return outcome

    async def submit(self, command: core.AnyCommand | core.AnyQuery) -> core.Outcome:
        return core.decide(self.state, command, self.now_ms)

    async def submit_to(
        self, partition: int, command: core.AnyCommand | core.AnyQuery
    ) -> core.Outcome:
        return await self.submit(command)

    async def close(self) -> None:
        return None

    def entries(self) -> list[LogEntry]:
        entries, prev = [], ""
        for seq, events in enumerate(self.log, start=1):
            entries.append(LogEntry(seq, f"1:{seq}", encode_batch(prev, events)))
            prev = f"1:{seq}"
        return entries


class Projector:
    """The gateway's port to the projector, answered by a real store."""

    def __init__(self, store: HistoryStore | None) -> None:
        self.store = store

    async def page(self, partition: int, request: HistoryRequest) -> HistoryReply:
        if self.store is None:
            raise HistoryUnavailable("no projector answered")
        return self.store.page(request)

    async def archived(self, partition: int, request: ArchivedRequest) -> ArchivedReply:
        if self.store is None:
            raise HistoryUnavailable("no projector answered")
        assert partition == 0
        return self.store.archived(request)


class Receipts(NoAudit):
    """The audit trail's receipts: which log entries were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, int]] = []

    async def receipt(self, partition: int, seq: int) -> bytes:
        self.asked.append((partition, seq))
        return b'{"seq": %d}' % seq


def archived_race(ledger: PureLedger) -> tuple[str, str]:
    """acc-1 wins on race-1, acc-2 loses; a retention window later both bets
    and the market are archived. Returns the two bet ids."""
    staff = core.acting("test")

    def ok(command: core.AnyCommand) -> core.AnyReply:
        outcome = ledger.run(command, staff)
        assert isinstance(outcome, core.Accepted), outcome
        return outcome.result

    for account in ("acc-1", "acc-2"):
        ok(core.OpenAccount(request_id=f"open-{account}", account_id=account))
        ok(
            core.Deposit(
                request_id=f"dep-{account}", account_id=account, amount_minor=1_000, reason="top-up"
            )
        )
    ok(
        core.CreateMarket(
            request_id="market",
            market_id="race-1",
            event_id="meeting",
            name="Race 1",
            selections=(
                core.SelectionSpec(selection_id="s0", name="Horse 0", odds=250),
                core.SelectionSpec(selection_id="s1", name="Horse 1", odds=300),
            ),
        )
    )
    bet_ids = []
    for account, selection, odds in (("acc-1", "s0", 250), ("acc-2", "s1", 300)):
        reply = ok(
            core.PlaceBet(
                request_id=f"bet-{account}",
                account_id=account,
                stake_minor=200,
                legs=(core.BetLeg("race-1", selection, odds),),
            )
        )
        assert isinstance(reply, core.BetReply)
        bet_ids.append(reply.bet_id)
    ok(core.CloseMarket(request_id="close", market_id="race-1"))
    ok(core.SettleMarket(request_id="settle", market_id="race-1", winners=(core.Winner("s0"),)))
    ledger.now_ms = RETENTION_MS
    assert ok(core.ArchiveSettled(request_id="archive")) == core.ArchiveReply(markets=1, bets=2)
    return bet_ids[0], bet_ids[1]


@pytest.fixture
def world(tmp_path: Path) -> tuple[PureLedger, HistoryStore, tuple[str, str]]:
    ledger = PureLedger()
    bets = archived_race(ledger)
    store = HistoryStore(tmp_path / "p0.sqlite", verifier=None)
    entries = ledger.entries()
    for start in range(0, len(entries), 4):  # in chunks, as the projector commits
        store.fold(entries[start : start + 4])
    return ledger, store, bets


def get(
    tmp_path: Path,
    ledger: PureLedger,
    store: HistoryStore | None,
    path: str,
    audit: NoAudit | None = None,
    **token: Any,
) -> httpx.Response:
    gateway = Gateway(
        settings=GatewaySettings(),
        partitions=1,
        metrics=GatewayMetrics(CollectorRegistry()),
        verifier=load_verifier(algorithm="HS256", keys_dir=local_keys_dir(tmp_path)),
        ledger=ledger,
        probe=ledger,
        claims=StubClaims(),
        history=Projector(store),
        odds=NoOdds(),
        revoker=StubRevoker(),
        audit=audit or NoAudit(),
    )
    bearer = mint_token(local_signing_key(tmp_path), **token)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get(path, headers={"Authorization": f"Bearer {bearer}"})

    return asyncio.run(go())


def test_the_projector_keeps_the_final_views(world: Any) -> None:
    ledger, store, (won, _) = world
    [archived] = [e for batch in ledger.log for e in batch if isinstance(e, core.SettledArchived)]
    reply = store.archived(ArchivedRequest(bet_id=won))
    assert isinstance(reply, ArchivedView) and reply.archived_ms == RETENTION_MS
    assert reply.view == next(view for view in archived.bets if view.bet_id == won)
    assert reply.view.status == "won" and reply.view.payout_minor == 500
    market = store.archived(ArchivedRequest(market_id="race-1"))
    assert isinstance(market, ArchivedView) and market.view == archived.markets[0]
    assert store.archived(ArchivedRequest(bet_id="B0-99")) == HistoryError(
        code="unknown_bet", message="no bet 'B0-99'"
    )
    assert store.archived(ArchivedRequest()).code == "validation_failed"  # type: ignore[union-attr]


def test_an_archived_bet_is_served_with_its_final_result(tmp_path: Path, world: Any) -> None:
    ledger, store, (won, lost) = world
    assert won not in ledger.state.bets, "the ledger no longer holds it"
    response = get(tmp_path, ledger, store, f"/v1/bets/{won}", role="bettor", account_id="acc-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["bet_id"], body["status"], body["payout_minor"]) == (won, "won", 500)
    assert body["legs"][0]["market_id"] == "race-1"
    staff = get(tmp_path, ledger, store, f"/v1/bets/{lost}", role="admin", sub="admin:ops")
    assert staff.status_code == 200 and staff.json()["status"] == "lost"


def test_another_bettors_archived_bet_is_unknown(tmp_path: Path, world: Any) -> None:
    ledger, store, (won, _) = world
    response = get(tmp_path, ledger, store, f"/v1/bets/{won}", role="bettor", account_id="acc-2")
    assert response.status_code == 404 and response.json()["code"] == "unknown_bet"


def test_an_archived_market_is_served(tmp_path: Path, world: Any) -> None:
    ledger, store, _ = world
    response = get(tmp_path, ledger, store, "/v1/markets/race-1", role="bettor", account_id="acc-1")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "settled"
    assert response.json()["winners"] == ["s0"]


def test_unknown_ids_stay_unknown_and_a_missing_projector_is_no_404(
    tmp_path: Path, world: Any
) -> None:
    ledger, store, (won, _) = world
    unknown = get(tmp_path, ledger, store, "/v1/bets/B0-99", role="admin", sub="admin:ops")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_bet"
    market = get(tmp_path, ledger, store, "/v1/markets/nowhere", role="admin", sub="admin:ops")
    assert market.status_code == 404 and market.json()["code"] == "unknown_market"
    down = get(tmp_path, ledger, None, f"/v1/bets/{won}", role="admin", sub="admin:ops")
    assert down.status_code == 503 and down.json()["code"] == "ledger_unavailable"


def test_an_archived_bet_still_has_its_receipt(tmp_path: Path, world: Any) -> None:
    """The receipt route finds the bet (archived) and the entry that placed it
    (the account's history), then asks the audit trail for that entry."""
    ledger, store, (won, _) = world
    placed_at = next(
        seq
        for seq, batch in enumerate(ledger.log, start=1)
        for event in batch
        if isinstance(event, BetPlaced) and event.bet_id == won
    )
    receipts = Receipts()
    response = get(
        tmp_path,
        ledger,
        store,
        f"/v1/bets/{won}/receipt",
        receipts,
        role="bettor",
        account_id="acc-1",
    )
    assert response.status_code == 200, response.text
    assert receipts.asked == [(0, placed_at)]
