"""The check reads a still log: replicas are judged against the log they
converged on (their hashes are taken again after the read, and the read is
repeated if the log moved), and a projector that is still folding is waited
for while it advances. Fakes stand in for NATS and SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ironbook.chaos import partitions
from ironbook.replication.interfaces import LogEntry


def _entries(count: int) -> list[LogEntry]:
    return [LogEntry(seq=n, batch_id=f"1:{n}", payload=b"") for n in range(1, count + 1)]


class MovingLog:
    """A log that gains an entry (a late retried command) during the first read."""

    def __init__(self) -> None:
        self.length = 10
        self.reads = 0

    async def converged_hashes(
        self, nc: object, partition: int, replicas: object, **_: object
    ) -> dict[str, str]:
        return {"p0-r1": f"hash-at-{self.length}", "p0-r2": f"hash-at-{self.length}"}

    async def read_whole_log(self, nc: object, partition: int, **_: object) -> list[LogEntry]:
        self.reads += 1
        entries = _entries(self.length)
        if self.reads == 1:
            self.length += 1  # lands after the read, before the second look at the replicas
        return entries


def test_replicas_are_judged_against_the_log_they_converged_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = MovingLog()
    monkeypatch.setattr(partitions, "converged_hashes", log.converged_hashes)
    monkeypatch.setattr(partitions, "read_whole_log", log.read_whole_log)
    said: list[str] = []
    hashes, entries = asyncio.run(
        partitions.still_log(object(), 0, ["p0-r1", "p0-r2"], said.append)
    )  # type: ignore[arg-type]
    assert len(entries) == 11 and hashes == {"p0-r1": "hash-at-11", "p0-r2": "hash-at-11"}
    assert log.reads == 2
    assert "partition 0: the log moved while it was read (attempt 1)" in said


def test_a_projection_is_waited_for_while_it_advances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    positions = iter([None, 3, 3, 5, 8, 10])

    def read_position(path: Path) -> int | None:
        return next(positions)

    monkeypatch.setattr(partitions, "read_position", read_position)
    monkeypatch.setattr(partitions, "read_projection", lambda path: "the projection")
    # Fewer polls without progress than the stall allows: it is waited for to the end.
    monkeypatch.setattr(partitions, "PROJECTION_STALL_MS", 1_000)
    assert asyncio.run(partitions.caught_up_projection(tmp_path, 10)) == "the projection"
    assert next(positions, "read to the end") == "read to the end"


def test_a_projection_that_stops_advancing_is_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[int] = []

    def read_position(path: Path) -> int:
        polls.append(4)
        return 4

    monkeypatch.setattr(partitions, "read_position", read_position)
    monkeypatch.setattr(partitions, "read_projection", lambda path: "behind")
    monkeypatch.setattr(partitions, "PROJECTION_STALL_MS", 500)
    assert asyncio.run(partitions.caught_up_projection(tmp_path, 10)) == "behind"
    assert 2 <= len(polls) <= 10  # ~0.5 s of 0.2 s polls, not the whole timeout
