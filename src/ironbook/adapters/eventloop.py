"""The event loop for ironbook's processes: uvloop where it is installed (a
project dependency on Linux and macOS), else the standard asyncio loop.

uvloop runs the same asyncio code with a faster loop and faster sockets; the
replicas, the gateway and the benchmark clients spend much of their time in
both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
