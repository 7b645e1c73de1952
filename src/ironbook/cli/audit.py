"""`ironbook audit`: sign checkpoints over the partition logs, export archives,
verify them and bet receipts offline (docs/audit.md).

    ironbook audit checkpoint --data-dir D [--offsite DIR] [--every-entries N] [--every-s S]
    ironbook audit export --data-dir D --out DIR [--partition P] [--from-seq A] [--to-seq B]
    ironbook audit verify DIR [--pubkey FILE] [--strict]
    ironbook audit verify --data-dir D [--partition P] [--strict]
    ironbook audit receipt --partition P --seq S (--archive DIR | --data-dir D) [--out FILE]
    ironbook audit verify-receipt FILE --pubkey FILE
    ironbook audit prove-consistency --partition P --old-size M --new-size N
                                     (--archive DIR | --data-dir D) [--out FILE]
    ironbook audit verify-consistency FILE --pubkey FILE

Exit status: 0 when what was checked holds, 1 when it does not, 2 when the
command cannot run (no cluster, no key, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

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
from ironbook.adapters.audit.keys import (
    PUBKEY_FILE,
    KeyFileError,
    load_or_create_signing_key,
    load_public_key,
    signing_key_path,
)
from ironbook.adapters.audit.proofs import (
    ProofBuildError,
    build_consistency_proof,
    build_receipt,
    encode_consistency_proof,
    encode_receipt,
    verify_consistency_proof,
    verify_receipt,
)
from ironbook.adapters.audit.signer import DEFAULT_EVERY_ENTRIES
from ironbook.adapters.audit.stream import (
    AUDIT_DIR,
    CheckpointSigner,
    SignResult,
    consistency_from_log,
    export_archive,
    receipt_from_log,
    sign_checkpoints,
)
from ironbook.cli.up import add_data_dir_argument, data_dir_of
from ironbook.replication.checkpoint import Checkpoint
from ironbook.replication.interfaces import LogUnavailable
from ironbook.replication.merkle import Frontier, LogName, leaf_hash, log_tag
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


def _partitions(runtime: RuntimeInfo, partition: int | None) -> list[int] | None:
    if partition is None:
        return list(range(runtime.partitions))
    if not 0 <= partition < runtime.partitions:
        _error(f"partition {partition} is not one of 0..{runtime.partitions - 1}")
        return None
    return [partition]


def _checkpoint(args: argparse.Namespace) -> int:
    data_dir = _settings_data_dir(args)
    runtime = _runtime(data_dir) if data_dir is not None else None
    if data_dir is None or runtime is None:
        return EXIT_CANNOT_RUN
    if args.every_entries < 1 or (args.every_s is not None and args.every_s <= 0):
        return _error("--every-entries and --every-s are positive")
    try:
        key = load_or_create_signing_key(signing_key_path(data_dir))
        signer = CheckpointSigner(
            key,
            data_dir / AUDIT_DIR,
            offsite=args.offsite,
            every_entries=args.every_entries,
        )
        result = asyncio.run(
            _sign_until_stopped(runtime.nats_urls, runtime.partitions, signer, args.every_s)
        )
    except (KeyFileError, ArchiveError, LogUnavailable, OSError) as err:
        return _error(str(err))
    if result.problems:
        return EXIT_FAILED
    return EXIT_CANNOT_RUN if result.unavailable else EXIT_OK


async def _sign_until_stopped(
    nats_urls: list[str], partitions: int, signer: CheckpointSigner, every_s: float | None
) -> SignResult:
    """SIGTERM or Ctrl-C ends a `--every-s` signer between runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await sign_checkpoints(
        nats_urls,
        list(range(partitions)),
        signer,
        every_s=every_s,
        stop=stop,
        report=_print_signed,
    )


def _print_signed(result: SignResult) -> None:
    latest: dict[LogName, Checkpoint] = {}
    counts: dict[LogName, int] = {}
    for checkpoint in result.signed:
        latest[checkpoint.partition] = checkpoint
        counts[checkpoint.partition] = counts.get(checkpoint.partition, 0) + 1
    for log, checkpoint in latest.items():
        print(
            f"partition {log}: {counts[log]} checkpoint(s) signed, up to tree size "
            f"{checkpoint.tree_size}, root {checkpoint.root}",
            flush=True,
        )
    for problem in result.problems:
        print(f"REFUSED: {problem}", flush=True)
    for unavailable in result.unavailable:
        print(f"warning: {unavailable}; not signed this run", flush=True)


def _export(args: argparse.Namespace) -> int:
    data_dir = _settings_data_dir(args)
    runtime = _runtime(data_dir) if data_dir is not None else None
    if data_dir is None or runtime is None:
        return EXIT_CANNOT_RUN
    partitions = _partitions(runtime, args.partition)
    if partitions is None:
        return EXIT_CANNOT_RUN
    audit_dir = data_dir / AUDIT_DIR
    if not (audit_dir / PUBKEY_FILE).exists():
        return _error(f"no checkpoints yet in {audit_dir} (run `ironbook audit checkpoint`)")
    if args.from_seq < 1 or (args.to_seq is not None and args.to_seq < args.from_seq):
        return _error("sequences start at 1 and --to-seq is not before --from-seq")
    try:
        result = asyncio.run(
            export_archive(
                runtime.nats_urls,
                partitions,
                audit_dir,
                args.out,
                from_seq=args.from_seq,
                to_seq=args.to_seq,
            )
        )
    except (ArchiveError, LogUnavailable, OSError) as err:
        return _error(str(err))
    for partition, (first, last) in result.ranges.items():
        print(f"partition {partition}: seq {first}..{last}")
    print(f"{result.entries} entries and {result.checkpoints} checkpoints in {args.out}")
    return EXIT_OK


def _print_verdict(where: Path | str, args: argparse.Namespace, pubkey: Path | None) -> int:
    verdict = verify_archive(Path(where), pubkey=pubkey)
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
    audit_dir = args.data_dir.resolve() / AUDIT_DIR
    if not (audit_dir / PUBKEY_FILE).exists():
        return _error(f"no checkpoints yet in {audit_dir} (run `ironbook audit checkpoint`)")
    with tempfile.TemporaryDirectory(prefix="ironbook-audit-") as temp:
        try:
            asyncio.run(export_archive(runtime.nats_urls, partitions, audit_dir, Path(temp)))
        except (ArchiveError, LogUnavailable, OSError) as err:
            return _error(str(err))
        return _print_verdict(temp, args, args.pubkey or audit_dir / PUBKEY_FILE)


def _write_document(document: bytes, out: Path | None, what: str) -> None:
    if out is None:
        sys.stdout.write(document.decode() + "\n")
    else:
        out.write_bytes(document + b"\n")
        print(f"{what} in {out}")


def _archive_tail(
    archive: Path, partition: int, frontier_size: int, to_seq: int
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


def _archive_checkpoints(archive: Path, partition: int) -> list[Checkpoint]:
    return [
        cp for _, cp in read_checkpoints(archive / CHECKPOINTS_FILE) if cp.partition == partition
    ]


def _receipt(args: argparse.Namespace) -> int:
    try:
        if args.archive is not None:
            checkpoints = _archive_checkpoints(args.archive, args.partition)
            covering = [cp.tree_size for cp in checkpoints if cp.tree_size >= args.seq]
            frontier, payloads = _archive_tail(
                args.archive, args.partition, args.seq - 1, min(covering, default=args.seq)
            )
            receipt = build_receipt(
                args.partition,
                args.seq,
                frontier=frontier,
                payloads=payloads,
                checkpoints=checkpoints,
            )
        elif args.data_dir is not None:
            runtime = _runtime(args.data_dir)
            if runtime is None:
                return EXIT_CANNOT_RUN
            receipt = asyncio.run(
                receipt_from_log(
                    runtime.nats_urls, args.partition, args.seq, args.data_dir.resolve() / AUDIT_DIR
                )
            )
        else:
            return _error("give --archive DIR or --data-dir D")
    except (ProofBuildError, ArchiveError, LogUnavailable, OSError, ValueError) as err:
        return _error(str(err))
    _write_document(
        encode_receipt(receipt), args.out, f"receipt for partition {args.partition} seq {args.seq}"
    )
    return EXIT_OK


def _prove_consistency(args: argparse.Namespace) -> int:
    try:
        if args.archive is not None:
            checkpoints = _archive_checkpoints(args.archive, args.partition)
            frontier, payloads = _archive_tail(
                args.archive, args.partition, args.old_size, args.new_size
            )
            proof = build_consistency_proof(
                args.partition,
                args.old_size,
                args.new_size,
                frontier=frontier,
                payloads=payloads,
                checkpoints=checkpoints,
            )
        elif args.data_dir is not None:
            runtime = _runtime(args.data_dir)
            if runtime is None:
                return EXIT_CANNOT_RUN
            proof = asyncio.run(
                consistency_from_log(
                    runtime.nats_urls,
                    args.partition,
                    args.old_size,
                    args.new_size,
                    args.data_dir.resolve() / AUDIT_DIR,
                )
            )
        else:
            return _error("give --archive DIR or --data-dir D")
    except (ProofBuildError, ArchiveError, LogUnavailable, OSError, ValueError) as err:
        return _error(str(err))
    _write_document(
        encode_consistency_proof(proof),
        args.out,
        f"consistency proof from tree size {args.old_size} to {args.new_size}",
    )
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

    checkpoint = commands.add_parser(
        "checkpoint",
        help="rebuild each partition's Merkle tree from its log and sign new checkpoints",
    )
    add_data_dir_argument(checkpoint)
    checkpoint.add_argument(
        "--offsite", type=Path, help="a directory that also receives every checkpoint"
    )
    checkpoint.add_argument(
        "--every-entries",
        type=int,
        default=DEFAULT_EVERY_ENTRIES,
        help=f"also sign at every multiple of this tree size (default {DEFAULT_EVERY_ENTRIES})",
    )
    checkpoint.add_argument(
        "--every-s",
        type=float,
        help="keep running: sign what is new every this many seconds (default: once)",
    )
    checkpoint.set_defaults(func=_checkpoint)

    export = commands.add_parser("export", help="write partition logs as an archive")
    add_data_dir_argument(export)
    export.add_argument("--out", type=Path, required=True, help="the archive directory")
    export.add_argument("--partition", type=int, help="one partition (default: all)")
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
    verify.add_argument("--partition", type=int, help="with --data-dir: one partition")
    verify.add_argument("--pubkey", type=Path, help="the signer's public key from a trusted source")
    verify.add_argument(
        "--strict", action="store_true", help="fail on entries not yet checkpointed"
    )
    verify.set_defaults(func=_verify)

    receipt = commands.add_parser("receipt", help="build the receipt of one log entry")
    receipt.add_argument("--partition", type=int, required=True)
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
    prove.add_argument("--partition", type=int, required=True)
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
