"""What every benchmark shares: the machine section of its JSON, the command
line it ran, progress lines, lists of sizes on its command line, and waiting
for a gateway to be ready."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import httpx

READY_POLL_S = 0.2


def machine_info(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """The `machine` part of a benchmark's JSON (`load_at_start`: `os.getloadavg()`)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in load_at_start],
    }


def command_line() -> str:
    """How this benchmark was started, for its JSON."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def log(text: str) -> None:
    """A progress line, on stderr (stdout is for the JSON)."""
    print(text, file=sys.stderr, flush=True)


def positive_ints(text: str) -> list[int]:
    """An argparse `type`: comma-separated positive integers (`1000,5000`),
    in the order given."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"give at least one number, each at least 1: {text!r}")
    return numbers


async def wait_http_ready(url: str, timeout_s: float) -> None:
    """Until `url`/readyz answers 200 (TimeoutError after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {timeout_s} s")
            await asyncio.sleep(READY_POLL_S)
