"""Scheduled backups: the backup process `ironbook up --backup-every` runs.

Takes a backup every `every_s` seconds until stopped (a backup under way is
finished first). A backup that fails for a reason outside this process (the
target or NATS unreachable, a target holding another log) is logged as an
error and tried again at the next period; anything else ends the process, and
the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ironbook.adapters.backup.backup import BackupError, BackupSummary
from ironbook.adapters.backup.target import TargetError
from ironbook.replication.concurrency import wait_for
from ironbook.replication.interfaces import ReplicationError

log = logging.getLogger("ironbook.backup")


async def serve(
    take: Callable[[], Awaitable[BackupSummary]], every_s: float, stop: asyncio.Event
) -> None:
    assert every_s > 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            summary = await take()
        except (BackupError, TargetError, ReplicationError, OSError) as err:
            log.error("backup failed: %s", err)
        else:
            log.info(
                "backup %s (%s): %d parts, %d bytes in %.1f s",
                summary.backup_id or "skipped",
                summary.kind or "nothing new",
                summary.parts,
                summary.bytes,
                summary.seconds,
            )
        wait_s = max(0.0, every_s - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), wait_s)
