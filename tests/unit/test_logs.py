"""Logging is set up once per process: JSON lines naming the process, node,
partition and the request being served; readable text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ironbook.logs import bound_request_id, setup_logging
from ironbook.settings import LogSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_name_the_process_and_the_request() -> None:
    out = io.StringIO()
    setup_logging(
        LogSettings(format="json"), process="replica", node_id="p1-r2", partition=1, stream=out
    )
    log = logging.getLogger("ironbook.test")
    log.info("outside")
    with bound_request_id("req-7"):
        log.warning("inside %d", 42)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["process"] == "replica"
    assert (first["node"], first["partition"]) == ("p1-r2", 1)
    assert "request_id" not in first
    assert second["request_id"] == "req-7"
    assert (second["level"], second["message"]) == ("WARNING", "inside 42")


def test_readable_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    setup_logging(LogSettings(), process="gateway", node_id="gw-1", stream=terminal)
    with bound_request_id("r1"):
        logging.getLogger("ironbook.test").info("hello")
    assert "[gateway gw-1 req=r1] ironbook.test: hello" in terminal.getvalue()
    setup_logging(LogSettings(), process="gateway", node_id="gw-1", stream=pipe)
    logging.getLogger("ironbook.test").info("hello")
    assert json.loads(pipe.getvalue())["message"] == "hello"


def test_levels_below_the_setting_are_dropped() -> None:
    out = io.StringIO()
    setup_logging(LogSettings(level="WARNING", format="json"), process="up", stream=out)
    logging.getLogger("ironbook.test").info("quiet")
    assert out.getvalue() == ""
