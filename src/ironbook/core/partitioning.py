"""Which partition owns an account: a stable hash, the same on every machine
and every Python (never the built-in `hash`, which is salted per process)."""

from __future__ import annotations

import zlib


def partition_of(account_id: str, partitions: int) -> int:
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(account_id.encode()) % partitions
