"""A stream's stored messages written to a file, one JSON object a line:
what a DR site's sealed streams held, kept when they are replaced by
mirrors of the other site (docs/dr.md, failback).

    {"seq": 12, "subject": "ledger.0", "time": "2026-...Z",
     "headers": {"Nats-Msg-Id": "..."}, "data": "<base64>"}

Messages are read with batched direct gets (any replica answers) from the
stream's first sequence to its last, skipping sequences the stream deleted;
the file is complete when it holds as many messages as the stream does. It
is written beside its final name, fsynced and renamed into place, and its
SHA-256 is added to `SHA256SUMS` in the same directory (`sha256sum -c
SHA256SUMS` checks the directory).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import msgspec
from nats.aio.client import Client as NatsClient

from ironbook.adapters.durable_files import fsync_directory
from ironbook.adapters.nats import mirrors
from ironbook.adapters.nats.provision import DirectGetFailed, direct_get_batch

HASH_FILE = "SHA256SUMS"
BATCH_MESSAGES = 1_000
BATCH_MAX_BYTES = 4 * 1024 * 1024
READ_TIMEOUT_S = 2.0
MAX_EMPTY_READS = 5
"""Batches in a row that bring nothing before the export gives up."""
_DIRECT_GET_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
        "Nats-UpTo-Sequence",
    }
)
"""What a direct get adds to a stored message's own headers."""


class ExportError(RuntimeError):
    """The stream could not be read whole."""


class ExportedStream(msgspec.Struct, frozen=True):
    stream: str
    file: str
    """The file's name, in the export's directory."""
    messages: int
    first_seq: int
    last_seq: int
    sha256: str


def export_line(seq: int, subject: str, time: str, headers: dict[str, str], data: bytes) -> bytes:
    """One message as one line of the export."""
    return (
        json.dumps(
            {
                "seq": seq,
                "subject": subject,
                "time": time,
                "headers": headers or None,
                "data": base64.b64encode(data).decode(),
            },
            sort_keys=True,
        ).encode()
        + b"\n"
    )


class _ExportFile:
    """`<directory>/<stream>.jsonl`, written beside its name and renamed
    into place once complete, its hash added to `SHA256SUMS`."""

    def __init__(self, directory: Path, stream: str) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{stream}.jsonl"
        self._partial = self.path.with_suffix(".jsonl.partial")
        self._file = self._partial.open("wb")
        self._digest = hashlib.sha256()

    def write(self, line: bytes) -> None:
        self._file.write(line)
        self._digest.update(line)

    def abandon(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)

    def finish(self) -> str:
        """Fsynced and renamed into place; its SHA-256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._partial.replace(self.path)
        fsync_directory(self.path.parent)
        digest = self._digest.hexdigest()
        _add_hash(self.directory, self.path.name, digest)
        return digest


async def export_stream(nc: NatsClient, stream: str, directory: Path) -> ExportedStream:
    """Every message `stream` stores, in `<directory>/<stream>.jsonl`."""
    info = await mirrors.stream_info(nc, stream, attempts=mirrors.STARTING_ATTEMPTS)
    state = info.get("state") or {}
    first_seq, last_seq = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
    expected = int(state.get("messages", 0))
    output = _ExportFile(directory, stream)
    try:
        written = await _copy(nc, stream, first_seq, last_seq, expected, output)
    except BaseException:
        output.abandon()
        raise
    return ExportedStream(
        stream=stream,
        file=output.path.name,
        messages=written,
        first_seq=first_seq,
        last_seq=last_seq,
        sha256=output.finish(),
    )


async def _copy(
    nc: NatsClient, stream: str, first_seq: int, last_seq: int, expected: int, output: _ExportFile
) -> int:
    """The `expected` messages between `first_seq` and `last_seq` written to
    `output`; how many (`ExportError` unless all)."""
    written, next_seq, empty_reads = 0, max(first_seq, 1), 0
    while written < expected and next_seq <= last_seq:
        try:
            batch = await direct_get_batch(
                nc,
                stream,
                next_seq,
                BATCH_MESSAGES,
                max_bytes=BATCH_MAX_BYTES,
                timeout_s=READ_TIMEOUT_S,
                contiguous=False,
            )
        except DirectGetFailed as err:
            raise ExportError(f"{stream}: {err}") from err
        if not batch:
            empty_reads += 1
            if empty_reads == MAX_EMPTY_READS:
                raise ExportError(f"{stream}: nothing read from seq {next_seq} on")
            continue
        empty_reads = 0
        for msg in batch:
            headers = dict(msg.headers or {})
            seq = int(headers["Nats-Sequence"])
            output.write(
                export_line(
                    seq,
                    headers.get("Nats-Subject", msg.subject),
                    headers.get("Nats-Time-Stamp", ""),
                    {k: v for k, v in headers.items() if k not in _DIRECT_GET_HEADERS},
                    msg.data,
                )
            )
            written += 1
            next_seq = seq + 1
    if written != expected:
        raise ExportError(f"{stream}: read {written} messages, the stream holds {expected}")
    return written


def _add_hash(directory: Path, file: str, sha256: str) -> None:
    """`SHA256SUMS` (the `sha256sum` format) with `file`'s line replaced or added."""
    path = directory / HASH_FILE
    lines = {}
    if path.exists():
        for line in path.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name:
                lines[name] = digest
    lines[file] = sha256
    partial = path.with_suffix(".partial")
    with partial.open("w") as handle:
        handle.writelines(f"{digest}  {name}\n" for name, digest in sorted(lines.items()))
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
    fsync_directory(path.parent)


def verify_export(directory: Path) -> dict[str, bool]:
    """Each file `SHA256SUMS` names: does its content still have that hash?"""
    found = {}
    for line in (directory / HASH_FILE).read_text().splitlines():
        digest, _, name = line.partition("  ")
        target = directory / name
        found[name] = target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest
    return found
