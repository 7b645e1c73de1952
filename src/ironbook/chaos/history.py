"""The history of a run: every client operation (`replication.history.Operation`),
as JSON lines.

One line per operation, written when it completes:

    {"client": "c3", "request_id": "c3-17", "kind": "place_bet", "account_id": "punter-4",
     "invoke_ns": ..., "complete_ns": ..., "invoke_wall_ms": ..., "complete_wall_ms": ...,
     "outcome": "ok", "reply_hex": "...", "balance_minor": null, "error": ""}
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import msgspec

from ironbook import core
from ironbook.replication.history import Operation, OutcomeKind, answered, command_kind

HISTORY_FILE = "history.jsonl"
"""The history's name in a run's data directory."""


class Invocation:
    """An operation in flight: `complete` or `give_up` it exactly once."""

    __slots__ = ("_command", "_invoke_ns", "_invoke_wall_ms", "_recorder", "client")

    def __init__(
        self, recorder: HistoryRecorder, client: str, command: core.AnyCommand | core.AnyQuery
    ) -> None:
        self._recorder = recorder
        self._command = command
        self.client = client
        self._invoke_ns = time.monotonic_ns()
        self._invoke_wall_ms = time.time_ns() // 1_000_000

    def _finish(self, outcome: OutcomeKind, error: str) -> Operation:
        command = self._command
        operation = Operation(
            client=self.client,
            request_id=command.request_id,
            kind=command_kind(command),
            invoke_ns=self._invoke_ns,
            complete_ns=time.monotonic_ns(),
            invoke_wall_ms=self._invoke_wall_ms,
            complete_wall_ms=time.time_ns() // 1_000_000,
            outcome=outcome,
            account_id=str(getattr(command, "account_id", "")),
            error=error,
        )
        self._recorder.append(operation)
        return operation

    def complete(self, outcome: core.Outcome) -> Operation:
        operation = answered(
            self.client,
            self._command,
            outcome,
            invoke_ns=self._invoke_ns,
            complete_ns=time.monotonic_ns(),
            invoke_wall_ms=self._invoke_wall_ms,
            complete_wall_ms=time.time_ns() // 1_000_000,
        )
        self._recorder.append(operation)
        return operation

    def complete_without_reply(self, outcome: Literal["ok", "fail"], detail: str) -> Operation:
        """A definite outcome heard without the core's reply (over HTTP):
        `detail` (e.g. the status and problem code) goes in `error`."""
        return self._finish(outcome, detail)

    def give_up(self, error: str) -> Operation:
        return self._finish("info", error)


class HistoryRecorder:
    """Operations in completion order, in memory and (if given a path)
    appended to a JSON-lines file as they complete."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.operations: list[Operation] = []
        self._file: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
        self._encoder = msgspec.json.Encoder()

    def invoke(self, client: str, command: core.AnyCommand | core.AnyQuery) -> Invocation:
        return Invocation(self, client, command)

    def append(self, operation: Operation) -> None:
        self.operations.append(operation)
        if self._file is not None:
            self._file.write(self._encoder.encode(operation) + b"\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_history(path: Path) -> list[Operation]:
    return list(iter_history(path))


def iter_history(path: Path) -> Iterator[Operation]:
    decoder = msgspec.json.Decoder(Operation)
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError as error:
                raise ValueError(f"{path}:{number}: not a history operation: {error}") from error
