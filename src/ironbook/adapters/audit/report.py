"""The regulator's report: bets, money movements and significant events in a
time window, each with the log position it is at and the checkpoint that
covers it, in JSON lines or CSV.

    DIR/bets.<fmt>          partition, seq, at_ms, bet_id, account_id, stake_minor,
                            legs ("market/selection@odds; ..."), potential_payout_minor,
                            each_way, checkpoint_size
    DIR/transactions.<fmt>  partition, seq, at_ms, account_id, kind, reference,
                            amount_minor, balance_minor, checkpoint_size
    DIR/events.<fmt>        seq, at_ms, kind, actor, reason, target, detail, source,
                            checkpoint_size
    DIR/checkpoints.jsonl   every published checkpoint (verify them with `pubkey`)
    DIR/pubkey              the signers' public key

`checkpoint_size` is the tree size of the first checkpoint of the row's log
at or past its `seq` (empty: not yet checkpointed): a receipt or `audit
verify` on an export of that log proves the row's entry. Each partition's
log is read from sequence 1 with the replicas' fold rule (void and
quarantined entries skipped), so balances are exact; only rows in `[from_ms, to_ms)` are written.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.archive import CHECKPOINTS_FILE
from ironbook.adapters.audit.checkpoint_stream import read_checkpoint_stream
from ironbook.adapters.audit.events import decode_event
from ironbook.adapters.audit.keys import PUBKEY_FILE
from ironbook.adapters.audit.stream import AuditedLog, read_log
from ironbook.core import events as ev
from ironbook.core.postings import player_postings
from ironbook.replication.batch import admit
from ironbook.replication.checkpoint import Checkpoint, encode_checkpoint
from ironbook.replication.interfaces import Verifier
from ironbook.replication.merkle import EVENTS_LOG, LogName

Format = Literal["jsonl", "csv"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "bets": (
        "partition", "seq", "at_ms", "bet_id", "account_id", "stake_minor", "legs",
        "potential_payout_minor", "each_way", "checkpoint_size",
    ),
    "transactions": (
        "partition", "seq", "at_ms", "account_id", "kind", "reference", "amount_minor",
        "balance_minor", "checkpoint_size",
    ),
    "events": (
        "seq", "at_ms", "kind", "actor", "reason", "target", "detail", "source",
        "checkpoint_size",
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReportWindow:
    from_ms: int
    to_ms: int
    account_id: str | None = None

    def holds(self, at_ms: int, account_id: str | None = None) -> bool:
        if not self.from_ms <= at_ms < self.to_ms:
            return False
        return self.account_id is None or account_id == self.account_id


@dataclass
class ReportCounts:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    checkpoints: int = 0


class _Writer:
    """One report file, JSON lines or CSV with a header."""

    def __init__(self, handle: IO[str], kind: str, fmt: Format) -> None:
        self._handle = handle
        self._columns = COLUMNS[kind]
        self._csv = csv.DictWriter(handle, self._columns) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def row(self, values: dict[str, Any]) -> None:
        assert tuple(values) == self._columns
        if self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in values.items()})
        else:
            self._handle.write(msgspec.json.encode(values).decode() + "\n")


class _Coverage:
    """The first checkpoint of each log at or past a sequence."""

    def __init__(self, checkpoints: list[Checkpoint]) -> None:
        self._sizes: dict[LogName, list[int]] = {}
        for checkpoint in checkpoints:
            self._sizes.setdefault(checkpoint.partition, []).append(checkpoint.tree_size)
        for sizes in self._sizes.values():
            sizes.sort()

    def of(self, log: LogName, seq: int) -> int | None:
        sizes = self._sizes.get(log, [])
        at = bisect.bisect_left(sizes, seq)
        return sizes[at] if at < len(sizes) else None


def _legs(event: ev.BetPlaced) -> str:
    return "; ".join(f"{leg.market_id}/{leg.selection_id}@{leg.odds}" for leg in event.legs)


async def _applied_events(
    nc: NatsClient, partition: int, verifier: Verifier
) -> AsyncIterator[tuple[int, core.AnyEvent]]:
    """(seq, event) of every applied (neither void nor quarantined) event of
    the partition's log."""
    log = AuditedLog(nc, partition)
    last_batch_id = ""
    async for entry in read_log(log, 1, await log.last_seq()):
        events = admit(entry, last_batch_id, verifier).events
        if events is None:
            continue
        last_batch_id = entry.batch_id
        for event in events:
            yield entry.seq, event


def _start_files(
    out: Path, fmt: Format, pubkey_pem: bytes, checkpoints: list[Checkpoint]
) -> dict[str, IO[str]]:
    out.mkdir(parents=True, exist_ok=True)
    (out / PUBKEY_FILE).write_bytes(pubkey_pem)
    lines = b"".join(encode_checkpoint(checkpoint) + b"\n" for checkpoint in checkpoints)
    (out / CHECKPOINTS_FILE).write_bytes(lines)
    return {kind: (out / f"{kind}.{fmt}").open("w", newline="") for kind in COLUMNS}


async def write_report(
    nc: NatsClient,
    verifiers: Sequence[Verifier],
    window: ReportWindow,
    fmt: Format,
    out: Path,
    pubkey_pem: bytes,
) -> ReportCounts:
    """`verifiers`: each partition's batch signatures, by partition."""
    counts = ReportCounts()
    checkpoints = await read_checkpoint_stream(nc)
    coverage = _Coverage(checkpoints)
    counts.checkpoints = len(checkpoints)
    handles = _start_files(out, fmt, pubkey_pem, checkpoints)
    try:
        writers = {kind: _Writer(handle, kind, fmt) for kind, handle in handles.items()}
        for partition, verifier in enumerate(verifiers):
            balances: dict[str, int] = {}
            async for seq, event in _applied_events(nc, partition, verifier):
                covered = coverage.of(partition, seq)
                if isinstance(event, ev.BetPlaced) and window.holds(event.at_ms, event.account_id):
                    counts.rows["bets"] += 1
                    writers["bets"].row({
                        "partition": partition, "seq": seq, "at_ms": event.at_ms,
                        "bet_id": event.bet_id, "account_id": event.account_id,
                        "stake_minor": event.stake_minor, "legs": _legs(event),
                        "potential_payout_minor": event.potential_payout_minor,
                        "each_way": event.each_way, "checkpoint_size": covered,
                    })  # fmt: skip
                for account_id, amount_minor, kind, reference in player_postings(event):
                    balances[account_id] = balances.get(account_id, 0) + amount_minor
                    if window.holds(event.at_ms, account_id):
                        counts.rows["transactions"] += 1
                        writers["transactions"].row({
                            "partition": partition, "seq": seq, "at_ms": event.at_ms,
                            "account_id": account_id, "kind": kind, "reference": reference,
                            "amount_minor": amount_minor, "balance_minor": balances[account_id],
                            "checkpoint_size": covered,
                        })  # fmt: skip
        events = AuditedLog(nc, EVENTS_LOG)
        async for entry in read_log(events, 1, await events.last_seq()):
            try:
                recorded = decode_event(entry.payload)
            except msgspec.MsgspecError:
                continue
            if not window.from_ms <= recorded.at_ms < window.to_ms:
                continue
            target = f"account {window.account_id}"
            if window.account_id is not None and recorded.target != target:
                continue
            counts.rows["events"] += 1
            writers["events"].row({
                "seq": entry.seq, "at_ms": recorded.at_ms, "kind": recorded.kind,
                "actor": recorded.actor, "reason": recorded.reason, "target": recorded.target,
                "detail": recorded.detail, "source": recorded.source,
                "checkpoint_size": coverage.of(EVENTS_LOG, entry.seq),
            })  # fmt: skip
    finally:
        for handle in handles.values():
            handle.close()
    return counts
