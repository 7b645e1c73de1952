"""The history checker over a cluster with several ledger partitions.

Each partition's log is judged against the operations on its accounts and
the market commands (which every partition's log carries). The client merges
a market command's replies from all partitions (a settlement's payouts are
summed), so with more than one partition a market command's reply is not
compared with any one log: it is still judged present exactly once (`ok`),
absent (`fail`) or either (`info`). The per-partition reports are combined
into one, counting every operation once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.provision import NatsEndpoint
from ironbook.chaos.projection import (
    Projection,
    ProjectionCheck,
    read_position,
    read_projection,
)
from ironbook.core import partition_of
from ironbook.replication.checker import CheckReport, SiteLoss, check_history
from ironbook.replication.history import Operation
from ironbook.replication.interfaces import LogEntry
from ironbook.services.inspect import converged_hashes, read_whole_log

CONVERGE_TIMEOUT_MS = 180_000
STILL_LOG_ATTEMPTS = 3
"""Convergence and the log read are repeated (this often at most) until the
replicas' hashes are the same before and after the read: the log did not
move meanwhile (a gateway's client can still be retrying a command)."""
PROJECTION_STALL_MS = 60_000
"""The projection is waited on as long as it advances, and given up on after
this long without progress (a busy machine folds slowly, but it folds)."""
PROJECTION_TIMEOUT_MS = 600_000
"""The most the projection is waited on in all."""


async def check_all_partitions(
    endpoint: NatsEndpoint,
    operations: Sequence[Operation],
    replicas: Mapping[int, Sequence[str]],
    *,
    data_dir: Path,
    projection_dbs: Mapping[int, Path] | None = None,
    offload: bool = False,
    site_losses: Mapping[int, SiteLoss] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> CheckReport:
    """Read every partition's whole log and its replicas' converged state
    hashes (none if they do not converge in time: a violation), judge the
    operations of each partition, and combine the verdicts (entries are
    verified with the batch-signing key of the cluster in `data_dir`, as its
    replicas verify them). `replicas`:
    partition -> replica node ids. `projection_dbs`: partition -> a history
    projection whose projector is running, to be compared with a fold of the
    log. `offload`: run the checker in a thread (keeps an event loop with a
    live display responsive). `site_losses`: partition -> the primary site
    lost in the run, when `endpoint` is the promoted DR site (`SiteLoss`)."""
    partitions = len(replicas)
    reports = []
    nc = await endpoint.connect("ironbook-check")
    try:
        for partition in range(partitions):
            hashes, entries = await still_log(nc, partition, replicas[partition], say)
            say(f"partition {partition}: read {len(entries)} log entries")
            mine = list(operations_of_partition(operations, partition, partitions))
            read_model = None
            projection_db = (projection_dbs or {}).get(partition)
            if projection_db is not None:
                projection = await caught_up_projection(projection_db, len(entries))
                read_model = ProjectionCheck(projection)
                say(
                    f"partition {partition}: read the history projection at position "
                    f"{projection.applied_seq}"
                )
            judge = functools.partial(
                check_history,
                mine,
                entries,
                hashes,
                expected_replicas=list(replicas[partition]),
                read_model=read_model,
                ledger_config=core.LedgerConfig(partition=partition),
                verifier=ledger_verifier(data_dir, partition),
                site_loss=(site_losses or {}).get(partition),
            )
            report = await asyncio.to_thread(judge) if offload else judge()
            say(f"partition {partition}: checked {len(mine)} operations")
            reports.append(report)
    finally:
        await nc.close()
    return combine_reports(reports, operations)


async def still_log(
    nc: NatsClient, partition: int, replicas: Sequence[str], say: Callable[[str], None]
) -> tuple[dict[str, str], list[LogEntry]]:
    """The replicas' converged hashes and the whole log they converged on.

    A single convergence followed by a read can judge the replicas against
    a log that moved in between (a command still being retried by a
    gateway's client lands late): the replicas would then be reported to
    disagree with a log they had not seen yet. So the hashes are taken again
    after the read, and the pair is used only if they did not change (every
    applied entry changes the state, if only its remembered replies)."""
    hashes: dict[str, str] = {}
    entries: list[LogEntry] = []
    for attempt in range(1, STILL_LOG_ATTEMPTS + 1):
        try:
            hashes = await converged_hashes(nc, partition, replicas, timeout_ms=CONVERGE_TIMEOUT_MS)
        except TimeoutError as error:
            say(f"partition {partition}: {error}")
            return {}, await read_whole_log(nc, partition, timeout_ms=CONVERGE_TIMEOUT_MS)
        say(f"partition {partition}: replicas converged")
        entries = await read_whole_log(nc, partition, timeout_ms=CONVERGE_TIMEOUT_MS)
        try:
            after = await converged_hashes(nc, partition, replicas, timeout_ms=CONVERGE_TIMEOUT_MS)
        except TimeoutError as error:
            say(f"partition {partition}: {error}")
            return {}, entries
        if after == hashes:
            return hashes, entries
        say(f"partition {partition}: the log moved while it was read (attempt {attempt})")
        hashes = after
    return hashes, entries


async def caught_up_projection(path: Path, last_seq: int) -> Projection:
    """The projection once it has applied the whole log, or as it is once it
    stops advancing for `PROJECTION_STALL_MS` (or after
    `PROJECTION_TIMEOUT_MS`): the checker then reports it behind."""
    started = time.monotonic()
    progress_at = started
    best = -1
    while time.monotonic() - started < PROJECTION_TIMEOUT_MS / 1000:
        position = await asyncio.to_thread(read_position, path)
        if position is not None and position >= last_seq:
            break
        if position is not None and position > best:
            best, progress_at = position, time.monotonic()
        if time.monotonic() - progress_at > PROJECTION_STALL_MS / 1000:
            break
        await asyncio.sleep(0.2)
    return await asyncio.to_thread(read_projection, path)


def operations_of_partition(
    operations: Sequence[Operation], partition: int, partitions: int
) -> Iterator[Operation]:
    """What `partition`'s log is judged against: the operations on its
    accounts, and every market command (without the merged reply when there
    are several partitions). A market command with an unknown outcome is
    resolved in partition 0 only, so that it is counted once; a duplicate of
    it in any log is still found (the checker looks at every request id in
    the log)."""
    for op in operations:
        if op.account_id:
            if partition_of(op.account_id, partitions) == partition:
                yield op
        elif partitions == 1:
            yield op
        elif op.outcome != "info" or partition == 0:
            yield msgspec.structs.replace(op, reply_hex="")


def combine_reports(reports: Sequence[CheckReport], operations: Sequence[Operation]) -> CheckReport:
    """One report for the whole cluster; operations are counted once."""
    if len(reports) == 1:
        return reports[0]
    commands = [op for op in operations if not op.is_query]
    counts: dict[str, int] = {}
    for report in reports:
        for kind, count in report.violation_counts.items():
            counts[kind] = counts.get(kind, 0) + count
    projections = [r.projection_agrees for r in reports if r.projection_agrees is not None]
    return CheckReport(
        verdict="pass" if all(r.verdict == "pass" for r in reports) else "fail",
        ops=len(operations),
        ok=sum(op.outcome == "ok" for op in commands),
        fail=sum(op.outcome == "fail" for op in commands),
        info=sum(op.outcome == "info" for op in commands),
        reads=sum(op.is_query for op in operations),
        info_applied=sum(r.info_applied for r in reports),
        info_absent=sum(r.info_absent for r in reports),
        lost=sum(r.lost for r in reports),
        duplicated=sum(r.duplicated for r in reports),
        conserved=all(r.conserved for r in reports),
        no_negative_balance=all(r.no_negative_balance for r in reports),
        replicas_agree=all(r.replicas_agree for r in reports),
        reads_consistent=all(r.reads_consistent for r in reports),
        log_entries=sum(r.log_entries for r in reports),
        void_entries=sum(r.void_entries for r in reports),
        replica_hashes={k: v for r in reports for k, v in r.replica_hashes.items()},
        log_hash=None,
        violations=[v for r in reports for v in r.violations],
        violation_counts=counts,
        projection_agrees=all(projections) if projections else None,
        quarantined_entries=sum(r.quarantined_entries for r in reports),
        rpo_acked_lost=sum(r.rpo_acked_lost for r in reports),
        rpo_lost=[loss for r in reports for loss in r.rpo_lost],
        rpo_window_reads=sum(r.rpo_window_reads for r in reports),
    )
