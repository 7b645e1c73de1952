"""Helper processes of a benchmark, driven over their stdin and stdout.

A child prints "ready" when it is set up, acts on commands (one per line on
its stdin), and prints its result as one JSON line. Load runs in its own
processes so that the driver's CPU does not slow what it measures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from ironbook.replication.concurrency import wait_for

READY_TIMEOUT_S = 300.0
RESULT_LINE_LIMIT_BYTES = 512 * 1024 * 1024
"""A subscriber process reports every latency sample on one line."""
EXIT_TIMEOUT_S = 15.0


async def stdin_lines() -> AsyncIterator[bytes]:
    """In a child: commands from the parent, one per line, until it closes the pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.strip()


class ChildProcess:
    """In the parent: one helper process (`python -m module argv...`)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, module: str, *argv: str) -> ChildProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=RESULT_LINE_LIMIT_BYTES,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = await wait_for(self.process.stdout.readline(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"a benchmark process failed to start: {line!r}")

    async def tell(self, command: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + b"\n")
        await self.process.stdin.drain()

    async def result(self, timeout_s: float) -> dict[str, Any]:
        """Its JSON result line; then it has `EXIT_TIMEOUT_S` to exit before it is killed."""
        assert self.process.stdout is not None
        line = await wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"a benchmark process exited ({self.process.returncode})")
        result: dict[str, Any] = json.loads(line)
        try:
            await wait_for(self.process.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            self.kill()
        return result

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
