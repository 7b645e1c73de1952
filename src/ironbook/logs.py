"""Logging, set up once per process by `setup_logging`.

Every line names the process kind, its node id and partition (when it has
them) and, inside a request, the request id: the gateway binds it with
`bound_request_id` for the whole request, and the ledger command it sends
carries it (its `request_id` is derived from the Idempotency-Key, and the
line that logs the command names both). JSON lines on stderr, one object
per line; readable text when stderr is a terminal (`log.format = "auto"`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ironbook.settings import LogSettings

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("ironbook_request_id", default="")


@contextlib.contextmanager
def bound_request_id(request_id: str) -> Iterator[None]:
    """Every log line written in this context (and in tasks it starts) carries `request_id`."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class _Identity(logging.Filter):
    """Stamps each record with who wrote it and the request it serves."""

    def __init__(self, process: str, node_id: str, partition: int | None) -> None:
        super().__init__()
        self.process = process
        self.node_id = node_id
        self.partition = partition

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_kind = self.process
        record.node_id = self.node_id
        record.partition = self.partition
        record.request_id = _request_id.get()
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
            f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": getattr(record, "process_kind", ""),
            "node": getattr(record, "node_id", ""),
            "partition": getattr(record, "partition", None),
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class ReadableLines(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(who)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        node_id = getattr(record, "node_id", "")
        partition = getattr(record, "partition", None)
        request_id = getattr(record, "request_id", "")
        who = [
            getattr(record, "process_kind", ""),
            node_id,
            "" if partition is None else f"p{partition}",
            f"req={request_id}" if request_id else "",
        ]
        record.who = "[" + " ".join(part for part in who if part) + "]"
        return super().format(record)


def setup_logging(
    settings: LogSettings,
    *,
    process: str,
    node_id: str = "",
    partition: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route every logger of this process through one handler on `stream`
    (stderr by default), replacing whatever was there."""
    stream = stream or sys.stderr
    readable = settings.format == "text" or (settings.format == "auto" and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ReadableLines() if readable else JsonLines())
    handler.addFilter(_Identity(process, node_id, partition))
    logging.basicConfig(level=settings.level, handlers=[handler], force=True)
