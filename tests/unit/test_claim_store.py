"""The Idempotency-Key claim store refuses cleanly (`ClaimUnavailable`,
which the gateway answers 503) whatever NATS error its bucket raises, the
"no response from stream" of a bucket whose servers restart included; a
lost create race still reads the winner's claim."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import nats.js.errors
import pytest

from ironbook.services.gateway.idempotency import ClaimStore, ClaimUnavailable, KeyReused


class _Entry:
    def __init__(self, value: bytes) -> None:
        self.value = value


class _Bucket:
    """A KV bucket whose `create` raises `error` (None: stores the value)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.values: dict[str, bytes] = {}

    async def create(self, key: str, value: bytes) -> int:
        if self.error is not None:
            raise self.error
        if key in self.values:
            raise nats.js.errors.KeyWrongLastSequenceError()
        self.values[key] = value
        return 1

    async def get(self, key: str) -> _Entry:
        return _Entry(self.values[key])


def _store(bucket: _Bucket) -> ClaimStore:
    kv: Any = bucket
    return ClaimStore(kv)


@pytest.mark.parametrize(
    "error",
    [
        nats.js.errors.NoStreamResponseError(),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(),
        nats.errors.ConnectionClosedError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_nats_error_is_a_clean_refusal(error: Exception) -> None:
    with pytest.raises(ClaimUnavailable):
        asyncio.run(_store(_Bucket(error)).claim("req-1", "f1"))


def test_the_same_key_with_the_same_request_is_claimed_and_another_is_refused() -> None:
    store = _store(_Bucket(None))

    async def claims() -> None:
        await store.claim("req-1", "f1")
        await store.claim("req-1", "f1")
        with pytest.raises(KeyReused):
            await store.claim("req-1", "f2")

    asyncio.run(claims())
