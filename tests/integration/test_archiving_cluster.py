"""Bounded state on a real cluster (3 NATS nodes, 3 replicas, the history
projector, a gateway worker), with a resettlement window and a bet retention
of seconds: a settled market's result becomes final, then its leader archives
it with its bet by itself; the bet leaves every replica's state and is still
served by `GET /v1/bets/{id}` with its final result; every replica ends at
the same state hash and the history checker passes the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ironbook import core
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.localproc import PortLease
from ironbook.client import ClientConfig, LedgerClient, connect_ledger
from ironbook.core import acting
from ironbook.core.events import SettledArchived
from ironbook.replication.batch import ReplayState
from ironbook.replication.checker import check_history
from ironbook.services.gateway.auth import local_signing_key, mint_token
from ironbook.services.inspect import converged_hashes, read_whole_log
from ironbook.services.local_cluster import GatewayOptions, LocalCluster

WINDOW_MS = 2_000
RETENTION_MS = 8_000
LEDGER = core.LedgerConfig(resettle_window_ms=WINDOW_MS, bet_retention_ms=RETENTION_MS)
WAIT_S = 90


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalCluster, str]]:
    monkeypatch.setenv("IRONBOOK_REPLICA_RESETTLE_WINDOW_MS", str(WINDOW_MS))
    monkeypatch.setenv("IRONBOOK_REPLICA_BET_RETENTION_MS", str(RETENTION_MS))
    ports = PortLease()
    [port] = ports.take(1)
    local = LocalCluster(tmp_path / "cluster", gateway=GatewayOptions(port=port, workers=1))
    try:
        local.start(timeout_ms=WAIT_S * 1000)
        asyncio.run(local.wait_leaders(timeout_ms=WAIT_S * 1000))
        yield local, f"http://127.0.0.1:{port}"
    finally:
        local.stop()
        ports.release()


async def _accepted(client: LedgerClient, command: core.AnyCommand) -> core.AnyReply:
    outcome = await client.submit(command)
    assert isinstance(outcome, core.Accepted), outcome
    return outcome.result


async def _settled_bet(client: LedgerClient) -> str:
    await _accepted(client, core.OpenAccount(request_id="open", account_id="alice"))
    await _accepted(
        client,
        core.Deposit(request_id="dep", account_id="alice", amount_minor=5_000, reason="top-up"),
    )
    await _accepted(
        client,
        core.CreateMarket(
            request_id="market",
            market_id="race-1",
            event_id="meeting",
            name="Race 1",
            selections=(
                core.SelectionSpec(selection_id="s0", name="Horse 0", odds=250),
                core.SelectionSpec(selection_id="s1", name="Horse 1", odds=300),
            ),
        ),
    )
    placed = await _accepted(
        client,
        core.PlaceBet(
            request_id="bet",
            account_id="alice",
            stake_minor=1_000,
            legs=(core.BetLeg("race-1", "s0", 250),),
        ),
    )
    assert isinstance(placed, core.BetReply)
    await _accepted(client, core.CloseMarket(request_id="close", market_id="race-1"))
    await _accepted(
        client,
        core.SettleMarket(request_id="settle", market_id="race-1", winners=(core.Winner("s0"),)),
    )
    return placed.bet_id


async def _archive_on_its_own(cluster: LocalCluster) -> str:
    client = await connect_ledger(
        cluster.ops, config=ClientConfig(deadline_ms=30_000), issuer=acting("test")
    )
    try:
        bet_id = await _settled_bet(client)
        settled_at = time.monotonic()
        await asyncio.sleep(WINDOW_MS / 1000 + 0.5)
        late = await client.submit(
            core.RollbackSettlement(request_id="late", market_id="race-1", actor="ops", reason="x")
        )
        if time.monotonic() - settled_at < RETENTION_MS / 1000:
            assert isinstance(late, core.Rejected) and late.code == "resettle_window_closed", late
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            read = await client.submit(
                core.GetBet(request_id=f"q-{time.monotonic()}", bet_id=bet_id)
            )
            assert isinstance(read, core.Accepted)
            if isinstance(read.result, core.ReadRefusal):
                assert read.result.code == "unknown_bet"
                break
            assert isinstance(read.result, core.BetView) and read.result.status == "won"
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the leader did not archive the settled market")
        archived = await client.submit(
            core.RollbackSettlement(request_id="later", market_id="race-1", actor="ops", reason="x")
        )
        assert isinstance(archived, core.Rejected) and archived.code == "unknown_market"
        assert "archived" in archived.message
        return bet_id
    finally:
        await client.close()


def test_the_leader_archives_a_settled_market_and_the_api_still_serves_its_bet(
    cluster: tuple[LocalCluster, str],
) -> None:
    local, url = cluster
    bet_id = asyncio.run(_archive_on_its_own(local))

    admin = mint_token(local_signing_key(local.data_dir), role="admin", sub="admin:test")
    deadline = time.monotonic() + WAIT_S
    while True:  # the projector trails the log a little
        response = httpx.get(
            f"{url}/v1/bets/{bet_id}", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["payout_minor"]) == ("won", 2_500)

    async def read_back() -> tuple[dict[str, str], list]:
        nc = await local.ops.connect("test-verify")
        try:
            hashes = await converged_hashes(nc, 0, local.replica_ids(0), timeout_ms=WAIT_S * 1000)
            entries = await read_whole_log(nc, 0)
        finally:
            await nc.close()
        return hashes, list(entries)

    hashes, entries = asyncio.run(read_back())
    assert len(set(hashes.values())) == 1, hashes
    assert check_history([], entries, hashes, ledger_config=LEDGER).violations == []
    replay = ReplayState.empty(LEDGER, verifier=ledger_verifier(local.data_dir, 0))
    archived = [
        event
        for entry in entries
        for event in replay.apply(entry) or ()
        if isinstance(event, SettledArchived)
    ]
    assert [view.bet_id for event in archived for view in event.bets] == [bet_id]
    state = replay.state
    assert state.bets == {} and "race-1" not in state.markets
    assert state.accounts["alice"].balance_minor == 5_000 - 1_000 + 2_500
    assert core.check_invariants(state) == []
