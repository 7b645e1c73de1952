"""The contents of a backup's parts, and their encryption.

A snapshot part is the snapshot as the snapshot store keeps it
(`adapters.nats.snapshots.encode_object`: a MessagePack `Snapshot`,
zstd-compressed). A log part is a `LogSegment`: the entries as the log stores
them (sequence, batch id, payload bytes: every batch intact), MessagePack,
zstd-compressed. Either is then encrypted with age to every recipient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
import pyrage
import zstandard

from ironbook.adapters.nats.snapshots import decode_object, encode_object
from ironbook.replication.interfaces import LogEntry, Snapshot

ZSTD_LEVEL = 3
SEGMENT_MAX_ENTRIES = 20_000
SEGMENT_MAX_BYTES = 32 * 1024 * 1024
"""A log part holds at most this many entries and payload bytes (memory for
one part at a time, on both sides)."""


class PartError(ValueError):
    """A part that does not decrypt or decode to what its manifest says."""


class LogSegment(msgspec.Struct, frozen=True, tag="log_segment/1"):
    partition: int
    entries: list[LogEntry]


_segment_decoder = msgspec.msgpack.Decoder(LogSegment)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(plain: bytes, recipients: Sequence[pyrage.x25519.Recipient]) -> bytes:
    return bytes(pyrage.encrypt(plain, list(recipients)))


def unseal(sealed: bytes, identity: pyrage.x25519.Identity, what: str) -> bytes:
    try:
        return bytes(pyrage.decrypt(sealed, [identity]))
    except pyrage.DecryptError as err:
        raise PartError(
            f"{what} does not decrypt with this identity (damaged, or for another key)"
        ) from err


def snapshot_plain(snapshot: Snapshot) -> bytes:
    return encode_object(snapshot)


def read_snapshot(plain: bytes, what: str) -> Snapshot:
    try:
        return decode_object(plain)
    except (msgspec.MsgspecError, zstandard.ZstdError) as err:
        raise PartError(f"{what} is not a snapshot: {err}") from err


def segment_plain(partition: int, entries: list[LogEntry]) -> bytes:
    encoded = msgspec.msgpack.encode(LogSegment(partition, entries))
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(encoded)


def read_segment(plain: bytes, what: str) -> LogSegment:
    try:
        return _segment_decoder.decode(zstandard.ZstdDecompressor().decompress(plain))
    except (msgspec.MsgspecError, zstandard.ZstdError) as err:
        raise PartError(f"{what} is not a log segment: {err}") from err
