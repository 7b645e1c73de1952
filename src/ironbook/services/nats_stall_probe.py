"""How often each NATS server stalls, probed from outside (the NATS collector
runs it beside its scrapes; `ironbook_nats_server_stalled_ratio`).

A server starved of CPU (a noisy neighbour, a throttled cgroup, a frozen
VM) stops for a share of every second. Its scrapes, once a second, catch
that rarely and late, and its slow answers slow the other servers' cluster
endpoints too, so their answer times do not say which server it is. A tiny
request to each server's monitoring port (`/`, a static page served from
the server's own memory), sent to every server at the same moment every
`every_s`, does: a probe is *stalled* when its server answered more than
`stall_s` later than the quickest server of the same round (a busy prober
or host delays every server's answer alike, so it stalls none) or not
within `timeout_s`. The ratio is the stalled share of a server's probes in
the last `window_s`; a server that refuses connections (not running) is
left out of its rounds, as `ironbook_nats_server_reachable` reports it.

    probe = StallProbe(["http://127.0.0.1:8222", ...])
    async with asyncio.TaskGroup() as group:
        group.create_task(probe.run(stop))
        ...
        probe.ratios()  # {"127.0.0.1:8222": 0.0, ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ironbook.replication.concurrency import wait_for

EVERY_S = 0.1
STALL_S = 0.025
WINDOW_S = 5.0
TIMEOUT_S = 0.5
REFUSED = -1.0
"""A probe's answer time when the server refused at once (not running)."""

Probe = Callable[[str, float], Coroutine[object, object, float]]
"""(monitor URL, timeout in seconds) -> seconds it took to answer (the
timeout if it did not; `REFUSED` if the connection was refused)."""


async def probe_once(monitor_url: str, timeout_s: float) -> float:
    """Seconds the monitoring port took to answer `GET /` (its status line)."""
    parts = urlsplit(monitor_url)
    started = time.perf_counter()

    async def answered() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(f"GET / HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
            await writer.drain()
            await reader.readline()
        finally:
            writer.close()

    try:
        await wait_for(answered(), timeout_s)
    except ConnectionRefusedError:
        return REFUSED
    except (OSError, TimeoutError):
        return timeout_s
    return time.perf_counter() - started


@dataclass
class StallProbe:
    monitor_urls: Sequence[str]
    every_s: float = EVERY_S
    stall_s: float = STALL_S
    window_s: float = WINDOW_S
    timeout_s: float = TIMEOUT_S
    probe: Probe = probe_once
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[tuple[float, bool]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._seen = {_server(url): deque() for url in self.monitor_urls}

    async def run(self, stop: asyncio.Event) -> None:
        """A round every `every_s` until `stop` (a round slower than that
        is followed by the next at once)."""
        while not stop.is_set():
            started = self.clock()
            await self.round()
            rest = self.every_s - (self.clock() - started)
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await wait_for(stop.wait(), rest)

    async def round(self) -> None:
        """Probe every server at once and note which stalled."""
        urls = self.monitor_urls
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self.probe(url, self.timeout_s)) for url in urls]
        took = {_server(url): task.result() for url, task in zip(urls, tasks, strict=True)}
        answered = [seconds for seconds in took.values() if seconds != REFUSED]
        if not answered:
            return
        quickest = min(answered)
        now = self.clock()
        for server, seconds in took.items():
            if seconds == REFUSED:
                continue
            stalled = seconds >= self.timeout_s or seconds - quickest > self.stall_s
            seen = self._seen[server]
            seen.append((now, stalled))
            while seen and seen[0][0] < now - self.window_s:
                seen.popleft()

    def ratios(self) -> dict[str, float]:
        """Per server (its monitoring address): the stalled share of its
        probes in the last `window_s`; absent while it has none there."""
        now = self.clock()
        ratios = {}
        for server, seen in self._seen.items():
            recent = [stalled for at, stalled in seen if at >= now - self.window_s]
            if recent:
                ratios[server] = sum(recent) / len(recent)
        return ratios


def _server(monitor_url: str) -> str:
    """The `server` label: the monitoring address, as the collector's other metrics have it."""
    return urlsplit(monitor_url).netloc
