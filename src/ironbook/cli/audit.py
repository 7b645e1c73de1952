"""`ironbook audit`: export the partition logs with the checkpoints their
leaders signed, verify archives, bet receipts and consistency proofs
offline (docs/audit.md).

    ironbook audit export --data-dir D --out DIR [--partition P] [--from-seq A] [--to-seq B]
    ironbook audit verify DIR [--pubkey FILE] [--strict]
    ironbook audit verify --data-dir D [--partition P] [--strict]
    ironbook audit receipt --partition P --seq S (--archive DIR | --data-dir D) [--out FILE]
    ironbook audit verify-receipt FILE --pubkey FILE
    ironbook audit prove-consistency --partition P --old-size M --new-size N
                                     (--archive DIR | --data-dir D) [--out FILE]
    ironbook audit verify-consistency FILE --pubkey FILE
    ironbook audit reconstruct ACCOUNT --data-dir D [--out FILE]
    ironbook audit report --from DATE --to DATE [--account ID] --format jsonl|csv
                          --out DIR --data-dir D

Exit status: 0 when what was checked holds, 1 when it does not, 2 when the
command cannot run (no cluster, no key, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters.audit.archive import (
    CHECKPOINTS_FILE,
    ENTRIES_FILE,
    FRONTIER_FILE,
    ArchiveError,
    read_checkpoints,
    read_entries,
    read_frontiers,
    verify_archive,
)
from ironbook.adapters.audit.keys import PUBKEY_FILE, KeyFileError, load_public_key
from ironbook.adapters.audit.proofs import (
    ProofBuildError,
    build_consistency_proof,
    build_receipt,
    encode_consistency_proof,
    encode_receipt,
    verify_consistency_proof,
    verify_receipt,
)
from ironbook.adapters.audit.reconstruct import Reconstruction, reconstruction
from ironbook.adapters.audit.report import ReportCounts, ReportWindow, write_report
from ironbook.adapters.audit.stream import (
    AUDIT_DIR,
    AuditedLog,
    consistency_from_log,
    export_archive,
    receipt_from_log,
)
from ironbook.adapters.audit.trail import parse_time_ms
from ironbook.adapters.ledger_keys import ledger_verifier
from ironbook.adapters.nats.provision import close_nats
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.client import ClientConfig, GaveUp, ledger_over_nats
from ironbook.replication.checkpoint import Checkpoint, CheckpointFormatError
from ironbook.replication.interfaces import LogUnavailable
from ironbook.replication.merkle import EVENTS_LOG, Frontier, LogName, leaf_hash, log_tag
from ironbook.services.gateway.calls import query_id
from ironbook.services.local_cluster import RuntimeInfo, read_runtime
from ironbook.settings import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_CANNOT_RUN


def _settings_data_dir(args: argparse.Namespace) -> Path | None:
    """The data directory from `--data-dir`, `--config` or the environment."""
    try:
        return data_dir_of(args)
    except ConfigError as err:
        _error(str(err))
        return None


def _runtime(data_dir: Path) -> RuntimeInfo | None:
    runtime = read_runtime(data_dir.resolve())
    if runtime is None:
        print(
            f"error: no cluster is running from {data_dir} (start one with `ironbook up`)",
            file=sys.stderr,
        )
    return runtime


def _log_name(text: str) -> LogName:
    """A `--partition` value: a partition number, or `events`."""
    if text == EVENTS_LOG:
        return EVENTS_LOG
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a partition number or {EVENTS_LOG!r}") from None


def _partitions(runtime: RuntimeInfo, partition: LogName | None) -> list[LogName] | None:
    """The logs to read: one, or every partition and the significant-event log."""
    if partition is None:
        return [*range(runtime.partitions), EVENTS_LOG]
    if partition != EVENTS_LOG and not 0 <= int(partition) < runtime.partitions:
        _error(f"partition {partition} is not one of 0..{runtime.partitions - 1} or events")
        return None
    return [partition]


def _export(args: argparse.Namespace) -> int:
    data_dir = _settings_data_dir(args)
    runtime = _runtime(data_dir) if data_dir is not None else None
    if data_dir is None or runtime is None:
        return EXIT_CANNOT_RUN
    partitions = _partitions(runtime, args.partition)
    if partitions is None:
        return EXIT_CANNOT_RUN
    pubkey = _published_pubkey(data_dir)
    if pubkey is None:
        return EXIT_CANNOT_RUN
    if args.from_seq < 1 or (args.to_seq is not None and args.to_seq < args.from_seq):
        return _error("sequences start at 1 and --to-seq is not before --from-seq")
    try:
        result = asyncio.run(
            export_archive(
                runtime.endpoint(),
                partitions,
                pubkey.read_bytes(),
                args.out,
                from_seq=args.from_seq,
                to_seq=args.to_seq,
            )
        )
    except (ArchiveError, CheckpointFormatError, LogUnavailable, OSError) as err:
        return _error(str(err))
    for partition, (first, last) in result.ranges.items():
        print(f"partition {partition}: seq {first}..{last}")
    print(f"{result.entries} entries and {result.checkpoints} checkpoints in {args.out}")
    return EXIT_OK


def _print_verdict(where: Path | str, args: argparse.Namespace, pubkey: Path | None) -> int:
    verdict = verify_archive(Path(where), pubkey=pubkey)
    for epoch in verdict.epochs:
        print(f"epoch: {epoch}")
    for warning in verdict.warnings:
        print(f"warning: {warning}")
    if verdict.problem is not None:
        print(f"FAILED: {verdict.problem}")
        return EXIT_FAILED
    summary = f"{verdict.entries} entries, {verdict.checkpoints_matched} checkpoints matched"
    if not verdict.passed(strict=args.strict):
        print(f"FAILED: {summary}, but entries are not yet checkpointed (--strict)")
        return EXIT_FAILED
    if verdict.warnings:
        print(f"{summary}: intact up to the last checkpoint; later entries not yet checkpointed")
    else:
        print(f"{summary}: intact")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    if args.archive is not None:
        if not args.archive.is_dir():
            return _error(f"{args.archive} is not a directory")
        return _print_verdict(args.archive, args, args.pubkey)
    if args.data_dir is None:
        return _error("give an archive directory or --data-dir")
    runtime = _runtime(args.data_dir)
    if runtime is None:
        return EXIT_CANNOT_RUN
    partitions = _partitions(runtime, args.partition)
    if partitions is None:
        return EXIT_CANNOT_RUN
    pubkey = args.pubkey or _published_pubkey(args.data_dir.resolve())
    if pubkey is None:
        return EXIT_CANNOT_RUN
    with tempfile.TemporaryDirectory(prefix="ironbook-audit-") as temp:
        try:
            asyncio.run(
                export_archive(runtime.endpoint(), partitions, pubkey.read_bytes(), Path(temp))
            )
        except (ArchiveError, CheckpointFormatError, LogUnavailable, OSError) as err:
            return _error(str(err))
        return _print_verdict(temp, args, pubkey)


def _published_pubkey(data_dir: Path) -> Path | None:
    """`<data-dir>/audit/pubkey`, which the signing replicas write."""
    pubkey = data_dir / AUDIT_DIR / PUBKEY_FILE
    if not pubkey.exists():
        _error(f"no {pubkey}: no leader has signed a checkpoint (are checkpoints off?)")
        return None
    return pubkey


def _write_document(document: bytes, out: Path | None, what: str) -> None:
    if out is None:
        sys.stdout.write(document.decode() + "\n")
    else:
        out.write_bytes(document + b"\n")
        print(f"{what} in {out}")


def _archive_tail(
    archive: Path, partition: LogName, frontier_size: int, to_seq: int
) -> tuple[Frontier, list[bytes]]:
    """An archive's frontier of `partition` at `frontier_size` (or the archive's own,
    if it starts later) and the payloads after it up to `to_seq`."""
    frontier = read_frontiers(archive / FRONTIER_FILE).get(partition, Frontier())
    tag = log_tag(partition)
    payloads: list[bytes] = []
    for line, entry, payload, _ in read_entries(archive / ENTRIES_FILE):
        if entry.partition != partition or entry.seq > to_seq:
            continue
        expected = frontier.size + len(payloads) + 1
        if entry.seq != expected:
            raise ArchiveError(f"{ENTRIES_FILE} line {line}: expected seq {expected}")
        if entry.seq <= frontier_size:
            frontier.append(leaf_hash(tag, entry.seq, payload))
        else:
            payloads.append(payload)
    return frontier, payloads


def _archive_proof_input(
    archive: Path, partition: LogName, frontier_size: int, to_seq: int | None
) -> tuple[Frontier, list[bytes], list[Checkpoint]]:
    """From an archive: `_archive_tail` up to `to_seq` (None: up to the first
    checkpoint past `frontier_size`) and the partition's checkpoints."""
    checkpoints = [
        cp for _, cp in read_checkpoints(archive / CHECKPOINTS_FILE) if cp.partition == partition
    ]
    if to_seq is None:
        covering = [cp.tree_size for cp in checkpoints if cp.tree_size > frontier_size]
        to_seq = min(covering, default=frontier_size + 1)
    frontier, payloads = _archive_tail(archive, partition, frontier_size, to_seq)
    return frontier, payloads, checkpoints


T = TypeVar("T")


def _from_cluster(data_dir: Path, build: Callable[[NatsClient], Awaitable[T]]) -> T | None:
    """`build(nc)` against the live cluster of `data_dir` (None: no cluster)."""
    runtime = _runtime(data_dir)
    if runtime is None:
        return None

    async def run() -> T:
        nc = await runtime.endpoint().connect("ironbook-audit-proofs")
        try:
            return await build(nc)
        finally:
            await close_nats(nc)

    return asyncio.run(run())


_PROOF_ERRORS = (ProofBuildError, ArchiveError, CheckpointFormatError, LogUnavailable, OSError)


def _receipt(args: argparse.Namespace) -> int:
    partition, seq = args.partition, args.seq
    try:
        if args.archive is not None:
            frontier, payloads, checkpoints = _archive_proof_input(
                args.archive, partition, seq - 1, None
            )
            receipt = build_receipt(
                partition, seq, frontier=frontier, payloads=payloads, checkpoints=checkpoints
            )
        elif args.data_dir is not None:
            built = _from_cluster(args.data_dir, lambda nc: receipt_from_log(nc, partition, seq))
            if built is None:
                return EXIT_CANNOT_RUN
            receipt = built
        else:
            return _error("give --archive DIR or --data-dir D")
    except (*_PROOF_ERRORS, ValueError) as err:
        return _error(str(err))
    _write_document(
        encode_receipt(receipt), args.out, f"receipt for partition {partition} seq {seq}"
    )
    return EXIT_OK


def _prove_consistency(args: argparse.Namespace) -> int:
    partition, old_size, new_size = args.partition, args.old_size, args.new_size
    try:
        if args.archive is not None:
            frontier, payloads, checkpoints = _archive_proof_input(
                args.archive, partition, old_size, new_size
            )
            proof = build_consistency_proof(
                partition,
                old_size,
                new_size,
                frontier=frontier,
                payloads=payloads,
                checkpoints=checkpoints,
            )
        elif args.data_dir is not None:
            built = _from_cluster(
                args.data_dir,
                lambda nc: consistency_from_log(nc, partition, old_size, new_size),
            )
            if built is None:
                return EXIT_CANNOT_RUN
            proof = built
        else:
            return _error("give --archive DIR or --data-dir D")
    except (*_PROOF_ERRORS, ValueError) as err:
        return _error(str(err))
    _write_document(
        encode_consistency_proof(proof),
        args.out,
        f"consistency proof from tree size {old_size} to {new_size}",
    )
    return EXIT_OK


RECONSTRUCT_ATTEMPTS = 5


async def _reconstruct_and_ask(
    data_dir: Path, runtime: RuntimeInfo, account_id: str
) -> tuple[Reconstruction, int | None]:
    """The account's history from the log, and the ledger's balance at the
    same log position: the log is read again until it did not move while
    the ledger was asked (None: it kept moving)."""
    rebuilt = reconstruction(
        account_id, runtime.partitions, lambda partition: ledger_verifier(data_dir, partition)
    )
    nc = await runtime.endpoint().connect("ironbook-audit-reconstruct")
    client = ledger_over_nats(
        nc,
        partitions=runtime.partitions,
        config=ClientConfig(deadline_ms=10_000),
        issuer=core.service_principal("ops", "cli:audit-reconstruct"),
    )
    try:
        log = AuditedLog(nc, rebuilt.partition)
        for _ in range(RECONSTRUCT_ATTEMPTS):
            before = await log.last_seq()
            await rebuilt.extend(nc, before)
            outcome = await client.submit(
                core.GetAccount(request_id=query_id(), account_id=account_id)
            )
            if await log.last_seq() != before:
                continue
            if isinstance(outcome, core.Accepted) and isinstance(outcome.result, core.AccountView):
                return rebuilt, outcome.result.balance_minor
            return rebuilt, None
        return rebuilt, None
    finally:
        await client.close()
        await close_nats(nc)


def _reconstruct(args: argparse.Namespace) -> int:
    data_dir = _settings_data_dir(args)
    runtime = _runtime(data_dir) if data_dir is not None else None
    if data_dir is None or runtime is None:
        return EXIT_CANNOT_RUN
    try:
        rebuilt, ledger_balance = asyncio.run(_reconstruct_and_ask(data_dir, runtime, args.account))
    except (LogUnavailable, GaveUp, KeyFileError, OSError) as err:
        return _error(str(err))
    if rebuilt.state_balance_minor is None:
        return _error(f"no account {args.account!r} in partition {rebuilt.partition}'s log")
    lines = b"".join(msgspec.json.encode(line) + b"\n" for line in rebuilt.lines)
    if args.out is not None:
        args.out.write_bytes(lines)
    else:
        sys.stdout.write(lines.decode())
    print(
        f"account {args.account}: {len(rebuilt.lines)} postings in partition "
        f"{rebuilt.partition}'s log up to seq {rebuilt.replayed_seq}; balance from the log "
        f"{rebuilt.balance_minor}, replayed state {rebuilt.state_balance_minor}, "
        f"ledger {ledger_balance if ledger_balance is not None else 'not comparable'}",
        file=sys.stderr,
    )
    if ledger_balance is None:
        return _error("the log kept moving while the ledger was asked: try again when quieter")
    if rebuilt.balance_minor == rebuilt.state_balance_minor == ledger_balance:
        print("equal: the balance history from the log alone is the ledger's", file=sys.stderr)
        return EXIT_OK
    print("FAILED: the log and the ledger disagree", file=sys.stderr)
    return EXIT_FAILED


def _report(args: argparse.Namespace) -> int:
    data_dir = _settings_data_dir(args)
    runtime = _runtime(data_dir) if data_dir is not None else None
    if data_dir is None or runtime is None:
        return EXIT_CANNOT_RUN
    pubkey = _published_pubkey(data_dir)
    if pubkey is None:
        return EXIT_CANNOT_RUN
    try:
        window = ReportWindow(
            parse_time_ms(args.from_date), parse_time_ms(args.to_date), args.account
        )
    except ValueError as err:
        return _error(f"--from and --to are ISO 8601 dates or date-times, or Unix ms: {err}")
    if window.to_ms <= window.from_ms:
        return _error("--to is after --from")
    try:
        verifiers = [ledger_verifier(data_dir, p) for p in range(runtime.partitions)]
    except KeyFileError as err:
        return _error(str(err))

    async def run() -> ReportCounts:
        nc = await runtime.endpoint().connect("ironbook-audit-report")
        try:
            return await write_report(
                nc, verifiers, window, args.format, args.out, pubkey.read_bytes()
            )
        finally:
            await close_nats(nc)

    try:
        counts = asyncio.run(run())
    except (LogUnavailable, CheckpointFormatError, OSError) as err:
        return _error(str(err))
    rows = ", ".join(f"{n} {kind}" for kind, n in counts.rows.items())
    print(f"{rows} and {counts.checkpoints} checkpoints in {args.out}")
    return EXIT_OK


def _verify_document(args: argparse.Namespace) -> int:
    try:
        key = load_public_key(args.pubkey)
        document = args.document.read_bytes()
    except (KeyFileError, OSError) as err:
        return _error(str(err))
    problem = args.verifier(key, document)
    if problem is not None:
        print(f"FAILED: {problem}")
        return EXIT_FAILED
    print(args.holds)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="signed checkpoints over the ledger, archives and receipts anyone can verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    export = commands.add_parser("export", help="write partition logs as an archive")
    add_data_dir_argument(export)
    export.add_argument("--out", type=Path, required=True, help="the archive directory")
    export.add_argument(
        "--partition", type=_log_name, help="one partition or `events` (default: all logs)"
    )
    export.add_argument("--from-seq", type=int, default=1, help="first sequence (default 1)")
    export.add_argument("--to-seq", type=int, help="last sequence (default: the end)")
    export.set_defaults(func=_export)

    verify = commands.add_parser(
        "verify", help="check an archive (or the live cluster) against its signed checkpoints"
    )
    verify.add_argument("archive", nargs="?", type=Path, help="an archive directory")
    verify.add_argument(
        "--data-dir", type=Path, help="verify the live cluster of this data directory instead"
    )
    verify.add_argument(
        "--partition", type=_log_name, help="with --data-dir: one partition or `events`"
    )
    verify.add_argument("--pubkey", type=Path, help="the signer's public key from a trusted source")
    verify.add_argument(
        "--strict", action="store_true", help="fail on entries not yet checkpointed"
    )
    verify.set_defaults(func=_verify)

    receipt = commands.add_parser("receipt", help="build the receipt of one log entry")
    receipt.add_argument("--partition", type=_log_name, required=True)
    receipt.add_argument("--seq", type=int, required=True)
    receipt.add_argument("--archive", type=Path, help="from an archive")
    receipt.add_argument("--data-dir", type=Path, help="from the live cluster")
    receipt.add_argument("--out", type=Path, help="write here (default: stdout)")
    receipt.set_defaults(func=_receipt)

    verify_receipt_parser = commands.add_parser(
        "verify-receipt", help="check a receipt offline with only the public key"
    )
    verify_receipt_parser.add_argument("document", type=Path, help="the receipt (JSON)")
    verify_receipt_parser.add_argument(
        "--pubkey", type=Path, required=True, help="the signer's public key (PEM)"
    )
    verify_receipt_parser.set_defaults(
        func=_verify_document,
        verifier=verify_receipt,
        holds="receipt holds: the entry is in the log at its position, under a signed checkpoint",
    )

    prove = commands.add_parser(
        "prove-consistency",
        help="prove that a partition's checkpoint extends an earlier one",
    )
    prove.add_argument("--partition", type=_log_name, required=True)
    prove.add_argument("--old-size", type=int, required=True, help="the earlier checkpoint's size")
    prove.add_argument("--new-size", type=int, required=True, help="the later checkpoint's size")
    prove.add_argument("--archive", type=Path, help="from an archive")
    prove.add_argument("--data-dir", type=Path, help="from the live cluster")
    prove.add_argument("--out", type=Path, help="write here (default: stdout)")
    prove.set_defaults(func=_prove_consistency)

    verify_consistency_parser = commands.add_parser(
        "verify-consistency", help="check a consistency proof offline with only the public key"
    )
    verify_consistency_parser.add_argument(
        "document", type=Path, help="the consistency proof (JSON)"
    )
    verify_consistency_parser.add_argument(
        "--pubkey", type=Path, required=True, help="the signer's public key (PEM)"
    )
    verify_consistency_parser.set_defaults(
        func=_verify_document,
        verifier=verify_consistency_proof,
        holds="consistent: the later checkpoint's tree extends the earlier one's",
    )

    reconstruct = commands.add_parser(
        "reconstruct",
        help="rebuild an account's balance history from the log alone and compare it "
        "with the ledger",
    )
    reconstruct.add_argument("account", help="the account id")
    add_data_dir_argument(reconstruct)
    reconstruct.add_argument("--out", type=Path, help="write the history (JSON lines) here")
    reconstruct.set_defaults(func=_reconstruct)

    report = commands.add_parser(
        "report",
        help="bets, transactions and significant events in a time window, each with the "
        "checkpoint covering it",
    )
    report.add_argument("--from", dest="from_date", required=True, help="ISO 8601 or Unix ms")
    report.add_argument(
        "--to", dest="to_date", required=True, help="ISO 8601 or Unix ms (excluded)"
    )
    report.add_argument("--account", help="only this account's rows")
    report.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    report.add_argument("--out", type=Path, required=True, help="the report directory")
    add_data_dir_argument(report)
    report.set_defaults(func=_report)
