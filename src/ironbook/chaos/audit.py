"""The audit trail after a chaos run: every log verifies across the leader
changes, and the significant-event log names every leader the run saw.

Run on the live cluster once the load has stopped and the replicas
converged: each partition's log and the `events` log is exported and
verified as `ironbook audit verify --data-dir` does (`adapters/audit`), and
each (partition, term) heard leading in a heartbeat must have its
`leader_elected` event. Leaders sign within a second and the event outboxes
retry, so both are waited for, bounded by `SETTLE_S`; what is still missing
then fails the run.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from ironbook.adapters.audit.archive import ArchiveError, verify_archive
from ironbook.adapters.audit.events import decode_event
from ironbook.adapters.audit.keys import PUBKEY_FILE
from ironbook.adapters.audit.stream import AUDIT_DIR, AuditedLog, export_archive, read_log
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.replication.checkpoint import CheckpointFormatError
from ironbook.replication.interfaces import LogUnavailable
from ironbook.replication.merkle import EVENTS_LOG, LogName

SETTLE_S = 60.0
POLL_S = 1.0
LEADER_ELECTED = "leader_elected"
_PARTITION = re.compile(r"partition (\d+)")
_TERM = re.compile(r"term (\d+)\b")


class LogAudit(msgspec.Struct, frozen=True):
    """`audit verify` of one log."""

    passed: bool
    entries: int
    checkpoints_matched: int
    problem: str | None = None
    unsealed: bool = False
    """Entries after the last checkpoint remained (a warning, not a failure)."""
    epochs: list[str] = msgspec.field(default_factory=list)
    """DR takeovers on this log: where its chain went on, what it gave up."""


class AuditCheck(msgspec.Struct, frozen=True):
    verdict: str
    """pass: every log verified and every leader seen was recorded."""
    logs: dict[str, LogAudit]
    leaders_seen: int
    """(partition, term) pairs heard leading over the run."""
    leaders_recorded: int
    """Of those, how many have their `leader_elected` event."""
    leader_events: int
    """`leader_elected` events in the log (those elected before the run was
    heard, at the cluster's start, too)."""
    missing: list[str] = msgspec.field(default_factory=list)
    """Leaders seen but not recorded: `partition P term T (node)`."""


def leader_of(kind: str, target: str, detail: str) -> tuple[int, int] | None:
    """(partition, term) of a `leader_elected` event (target `partition P`,
    detail `term T at seq S`), None for any other."""
    partition, term = _PARTITION.fullmatch(target), _TERM.match(detail)
    if kind != LEADER_ELECTED or partition is None or term is None:
        return None
    return int(partition[1]), int(term[1])


async def recorded_leaders(endpoint: NatsEndpoint) -> list[tuple[int, int]]:
    """(partition, term) of every `leader_elected` event, in log order."""
    nc = await endpoint.connect("ironbook-chaos-audit")
    try:
        log = AuditedLog(nc, EVENTS_LOG)
        found = []
        async for entry in read_log(log, 1, await log.last_seq()):
            try:
                event = decode_event(entry.payload)
            except msgspec.MsgspecError:
                continue  # not an event: the verification below names it
            leader = leader_of(event.kind, event.target, event.detail)
            if leader is not None:
                found.append(leader)
        return found
    finally:
        await close_nats(nc)


async def verify_logs(
    endpoint: NatsEndpoint, data_dir: Path, logs: list[LogName]
) -> dict[str, LogAudit]:
    """`ironbook audit verify --data-dir` of each log, one archive each."""
    pubkey = data_dir / AUDIT_DIR / PUBKEY_FILE
    audits: dict[str, LogAudit] = {}
    for log in logs:
        with tempfile.TemporaryDirectory(prefix="ironbook-chaos-audit-") as temp:
            try:
                await export_archive(endpoint, [log], pubkey.read_bytes(), Path(temp))
            except (ArchiveError, CheckpointFormatError, LogUnavailable, OSError) as err:
                audits[str(log)] = LogAudit(False, 0, 0, problem=f"export: {err}")
                continue
            verdict = await asyncio.to_thread(verify_archive, Path(temp), pubkey=pubkey)
        audits[str(log)] = LogAudit(
            passed=verdict.passed(strict=False),
            entries=verdict.entries,
            checkpoints_matched=verdict.checkpoints_matched,
            problem=verdict.problem,
            unsealed=bool(verdict.warnings),
            epochs=verdict.epochs,
        )
    return audits


async def check_audit(
    endpoint: NatsEndpoint,
    data_dir: Path,
    partitions: int,
    leaders_seen: Mapping[int, Mapping[int, str]],
    say: Callable[[str], None] = lambda _: None,
) -> AuditCheck:
    """Verify every log and match `leaders_seen` (partition -> term -> node)
    with the recorded elections, waiting up to `SETTLE_S` for the last
    checkpoints and events."""
    seen = {(p, term): node for p, terms in leaders_seen.items() for term, node in terms.items()}
    logs: list[LogName] = [*range(partitions), EVENTS_LOG]
    deadline = time.monotonic() + SETTLE_S
    while True:
        recorded = await recorded_leaders(endpoint)
        missing = sorted(set(seen) - set(recorded))
        audits = await verify_logs(endpoint, data_dir, logs)
        sealed = all(a.passed and not a.unsealed for a in audits.values())
        if (not missing and sealed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    passed = not missing and all(a.passed for a in audits.values())
    check = AuditCheck(
        verdict="pass" if passed else "fail",
        logs=audits,
        leaders_seen=len(seen),
        leaders_recorded=len(seen) - len(missing),
        leader_events=len(recorded),
        missing=[f"partition {p} term {term} ({seen[p, term]})" for p, term in missing],
    )
    say(audit_line(check))
    return check


def audit_line(check: AuditCheck) -> str:
    entries = sum(a.entries for a in check.logs.values())
    failed = [f"{log}: {a.problem}" for log, a in check.logs.items() if not a.passed]
    line = (
        f"audit: {check.verdict.upper()}; {len(check.logs)} logs verified ({entries} entries"
        f"{', some not yet checkpointed' if any(a.unsealed for a in check.logs.values()) else ''})"
        f"; leaders seen {check.leaders_seen}, recorded {check.leaders_recorded}"
    )
    extra = failed + [f"not recorded: {m}" for m in check.missing]
    return "; ".join([line, *extra])
