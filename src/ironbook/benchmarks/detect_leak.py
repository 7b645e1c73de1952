"""A process that leaks memory on command, for `ironbook bench detect`.

    python -m ironbook.benchmarks.detect_leak PORT

It serves its own process metrics (prometheus-client's process collector:
`process_resident_memory_bytes` read from /proc) on `127.0.0.1:PORT`, the
way a replica does, prints "ready", then obeys its stdin: `grow N` takes N
more bytes of memory every second (touched, so they are resident), `free`
lets all of it go. When stdin closes it prints its peak resident memory as a
JSON line and exits."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from ironbook.adapters.procfs import process_stat
from ironbook.benchmarks.children import stdin_lines

_STEP_S = 0.1
_PAGE = 4096


async def _leak(port: int) -> dict[str, int]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    server, thread = start_http_server(port, "127.0.0.1", registry=registry)
    held: list[bytearray] = []
    rate = 0
    peak = 0

    async def grow() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(_STEP_S)
            if rate > 0:
                chunk = bytearray(int(rate * _STEP_S))
                for at in range(0, len(chunk), _PAGE):
                    chunk[at] = 1
                held.append(chunk)
            stat = process_stat(os.getpid())
            if stat is not None:
                peak = max(peak, stat.rss_bytes)

    print("ready", flush=True)
    async with asyncio.TaskGroup() as group:
        grower = group.create_task(grow())
        async for line in stdin_lines():
            command, _, value = line.decode().partition(" ")
            if command == "grow":
                rate = int(value)
            elif command == "free":
                rate = 0
                held.clear()
        grower.cancel()
    server.shutdown()
    thread.join()
    return {"peak_rss_bytes": peak}


def main() -> None:
    print(json.dumps(asyncio.run(_leak(int(sys.argv[1])))), flush=True)


if __name__ == "__main__":
    main()
