"""The in-memory log models the engine semantics the protocol relies on
(measured on JetStream, see ENGINE-NOTES.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ironbook.replication.interfaces import Fenced
from ironbook.replication.sim.log import LogService


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _service(
    loop: asyncio.AbstractEventLoop, now: list[int], *, window_ms: int = 1_000
) -> LogService:
    return LogService(loop, now_ms=lambda: now[0], dedupe_window_ms=window_ms)


def test_append_needs_the_expected_last_sequence(loop: asyncio.AbstractEventLoop) -> None:
    service = _service(loop, [0])
    assert service.append("a", b"x", 0, "1:1") == 1
    assert service.append("a", b"y", 1, "1:2") == 2
    with pytest.raises(Fenced):
        service.append("b", b"z", 1, "2:1")
    assert service.last_seq() == 2


def test_a_known_batch_id_gets_its_original_ack_before_the_sequence_check(
    loop: asyncio.AbstractEventLoop,
) -> None:
    service = _service(loop, [0])
    service.append("a", b"x", 0, "1:1")
    service.append("b", b"y", 1, "2:1")
    # Stale expected sequence and different payload: still the original ack.
    assert service.append("a", b"other", 0, "1:1") == 1
    assert service.duplicates_answered == 1
    assert [e.batch_id for e in service.entries] == ["1:1", "2:1"]


def test_after_the_dedupe_window_a_retry_is_fenced_not_appended_twice(
    loop: asyncio.AbstractEventLoop,
) -> None:
    now = [0]
    service = _service(loop, now, window_ms=1_000)
    service.append("a", b"x", 0, "1:1")
    now[0] = 1_000
    with pytest.raises(Fenced):
        service.append("a", b"x", 0, "1:1")
    assert service.last_seq() == 1


def test_read_returns_a_bounded_slice(loop: asyncio.AbstractEventLoop) -> None:
    service = _service(loop, [0])
    for n in range(5):
        service.append("a", b"x", n, f"1:{n + 1}")
    assert [e.seq for e in service.read(2, 2)] == [2, 3]
    assert service.read(6, 10) == []
