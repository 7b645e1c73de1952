"""The event recorder killed while it records a burst of deposits: once
started again it records every deposit exactly once (its windows of events
in flight, its resume point and JetStream's de-duplication together)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ironbook import core
from ironbook.adapters.audit.events import EVENTS_STREAM, decode_event, event_subject
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.client import connect_ledger
from ironbook.services.local_cluster import LocalCluster

ACCOUNTS = 3_000
RECORDED_WITHIN_S = 90.0


async def _recorded_deposits(endpoint: NatsEndpoint) -> int:
    nc = await endpoint.connect("test-recorded-deposits")
    try:
        subject = event_subject("deposit")
        info = await nc.jetstream().stream_info(EVENTS_STREAM, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))
    finally:
        await close_nats(nc)


async def _deposit_sources(endpoint: NatsEndpoint) -> list[str]:
    nc = await endpoint.connect("test-deposit-sources")
    try:
        log = AuditedLog(nc, "events")
        events = [decode_event(e.payload) async for e in read_log(log, 1, await log.last_seq())]
        return [event.source for event in events if event.kind == "deposit"]
    finally:
        await close_nats(nc)


def test_a_killed_recorder_records_every_deposit_once(cluster: LocalCluster) -> None:
    accounts = [f"acct-{i}" for i in range(ACCOUNTS)]

    async def deposit_then_kill_the_recorder() -> None:
        client = await connect_ledger(cluster.ops, issuer=core.acting("test"))
        try:
            await client.submit_many(
                [core.OpenAccount(request_id=f"open-{a}", account_id=a) for a in accounts]
            )
            await client.submit_many(
                [
                    core.Deposit(
                        request_id=f"dep-{a}",
                        account_id=a,
                        amount_minor=10_000,
                        reason="test top-up",
                    )
                    for a in accounts
                ]
            )
        finally:
            await client.close()
        deadline = time.monotonic() + RECORDED_WITHIN_S
        while await _recorded_deposits(cluster.ops) == 0:
            assert time.monotonic() < deadline, "the recorder recorded no deposit"
            await asyncio.sleep(0.02)
        cluster.recorder.kill()

    asyncio.run(deposit_then_kill_the_recorder())
    part = asyncio.run(_recorded_deposits(cluster.ops))
    cluster.recorder.start()

    deadline = time.monotonic() + RECORDED_WITHIN_S
    while (recorded := asyncio.run(_recorded_deposits(cluster.ops))) < ACCOUNTS:
        assert time.monotonic() < deadline, f"{recorded} of {ACCOUNTS} deposits recorded"
        time.sleep(0.5)
    time.sleep(2.0)  # anything recorded twice would land by now

    sources = asyncio.run(_deposit_sources(cluster.ops))
    twice = [source for source, count in Counter(sources).items() if count > 1]
    assert twice == []
    assert len(sources) == ACCOUNTS
    assert 0 < part < ACCOUNTS, "the kill did not land in the middle of the burst"
