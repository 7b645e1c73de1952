"""Benchmark: `ironbook audit verify` speed, in entries per second.

Writes an archive of N synthetic log entries (deterministic payloads of a fixed
size, one partition, a checkpoint signed every 10,000 entries and at the end)
to a temp directory, then times `verify_archive` over it. The baseline, run on
the same file in the same run, is the floor any verifier pays: read each line
and hash it once with SHA-256. The ratio says what rebuilding the tree,
decoding and checking signatures cost on top.

    ironbook bench audit [--entries N] [--payload-bytes B] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ironbook.adapters.audit.archive import ENTRIES_FILE, ArchiveWriter, entry_line, verify_archive
from ironbook.adapters.audit.keys import public_key_pem
from ironbook.adapters.audit.signer import DEFAULT_EVERY_ENTRIES, LogSigner
from ironbook.benchmarks.common import command_line, log, machine_info


def _write(out: Path, entries: int, payload_bytes: int) -> float:
    """The archive; returns seconds spent signing and writing."""
    key = Ed25519PrivateKey.generate()
    signer = LogSigner(key, 0, every_entries=DEFAULT_EVERY_ENTRIES)
    checkpoints = []
    filler = hashlib.sha256(b"ironbook").digest() * (payload_bytes // 32 + 1)
    started = time.perf_counter()
    with ArchiveWriter(out, public_key_pem(key.public_key())) as writer:
        for seq in range(1, entries + 1):
            payload = seq.to_bytes(8, "big") + filler[: max(0, payload_bytes - 8)]
            writer.entry(entry_line(0, seq, payload))
            checkpoint = signer.add(seq, payload, now_ms=seq)
            if checkpoint is not None:
                checkpoints.append(checkpoint)
        last = signer.finish(now_ms=entries + 1)
        writer.finish([*checkpoints, *([last] if last is not None else [])], [])
    return time.perf_counter() - started


def _baseline(entries_path: Path) -> tuple[int, float]:
    """Read every line and hash it once: (lines, seconds)."""
    lines = 0
    started = time.perf_counter()
    with entries_path.open("rb") as handle:
        for line in handle:
            hashlib.sha256(line).digest()
            lines += 1
    return lines, time.perf_counter() - started


def run(entries: int, payload_bytes: int) -> dict[str, object]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ironbook-bench-audit-") as temp:
        archive = Path(temp)
        log(f"writing {entries:,} entries of {payload_bytes} bytes, signing checkpoints ...")
        sign_seconds = _write(archive, entries, payload_bytes)
        archive_bytes = sum(path.stat().st_size for path in archive.iterdir())
        log("hashing every line (baseline) ...")
        lines, baseline_seconds = _baseline(archive / ENTRIES_FILE)
        assert lines == entries
        log("verifying ...")
        started = time.perf_counter()
        verdict = verify_archive(archive)
        verify_seconds = time.perf_counter() - started
    assert verdict.problem is None, verdict.problem
    assert verdict.entries == entries and not verdict.warnings
    verify_rate = entries / verify_seconds
    baseline_rate = entries / baseline_seconds
    return {
        "benchmark": "audit.verify",
        "entries": entries,
        "payload_bytes": payload_bytes,
        "archive_bytes": archive_bytes,
        "checkpoints": verdict.checkpoints_matched,
        "verify_seconds": round(verify_seconds, 3),
        "verify_entries_per_s": round(verify_rate),
        "baseline_read_and_hash_entries_per_s": round(baseline_rate),
        "verify_vs_baseline": round(verify_rate / baseline_rate, 3),
        "write_and_sign_entries_per_s": round(entries / sign_seconds),
        "machine": machine_info(load_at_start),
        "command": command_line(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ironbook bench audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="log entries (default 1000000)"
    )
    parser.add_argument(
        "--payload-bytes", type=int, default=200, help="bytes per entry (default 200)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.payload_bytes < 8:
        parser.error("--entries is at least 1 and --payload-bytes at least 8")
    result = run(args.entries, args.payload_bytes)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"audit verify: {result['verify_entries_per_s']:,} entries/s "
            f"({result['verify_vs_baseline']} of reading and hashing each line once)"
        )
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
