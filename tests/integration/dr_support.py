"""What the DR integration tests share: deposits on the primary, and a
site's audit trail verified from its live logs."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from ironbook.adapters.audit.archive import verify_archive
from ironbook.adapters.audit.keys import PUBKEY_FILE
from ironbook.adapters.audit.stream import AUDIT_DIR, export_archive
from ironbook.client import ClientConfig, connect_ledger, open_funded_account
from ironbook.core import acting
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.services import dr
from ironbook.services.local_cluster import LocalCluster


async def audit_epochs_on(cluster: LocalCluster, site: dr.Site, wait_s: float) -> list[str]:
    """`audit verify` of `site`'s logs (partition 0 and the events) once it
    has signed everything it holds (bounded by `wait_s`): the epochs it
    reports. Any problem fails the test."""
    pubkey = cluster.data_dir / AUDIT_DIR / PUBKEY_FILE
    deadline = time.monotonic() + wait_s
    while True:
        with tempfile.TemporaryDirectory() as temp:
            await export_archive(
                cluster.site_endpoint(site), [0, EVENTS_LOG], pubkey.read_bytes(), Path(temp)
            )
            verdict = verify_archive(Path(temp), pubkey=pubkey)
        assert verdict.problem is None, verdict.problem
        if not verdict.warnings:
            return verdict.epochs
        assert time.monotonic() < deadline, verdict.warnings
        await asyncio.sleep(1)


async def deposit(cluster: LocalCluster, tag: str, accounts: int) -> float:
    """Open and fund `accounts` accounts; seconds until the first was accepted."""
    client = await connect_ledger(
        cluster.ops,
        config=ClientConfig(request_timeout_ms=1_000, deadline_ms=60_000),
        issuer=acting("test"),
    )
    started = time.monotonic()
    first_s = 0.0
    try:
        for index in range(accounts):
            await open_funded_account(client, f"{tag}-{index}", 1_000, "top-up")
            first_s = first_s or time.monotonic() - started
    finally:
        await client.close()
    return first_s
