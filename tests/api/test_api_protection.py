"""Traffic protection against real workers: rate limits and load shedding."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from api_support import Api, World, unique


def test_rate_limit_returns_429_then_recovers(api: Api, world: World) -> None:
    headers = api.auth("auditor", sub=unique("auditor"))

    async def burst() -> list[httpx.Response]:
        # All at once, so that however slow the machine, the bucket (5/s,
        # burst 5) cannot refill between 20 of them.
        async with httpx.AsyncClient(base_url=api.throttled_url, timeout=20) as client:
            requests = [client.get("/v1/markets", headers=headers) for _ in range(20)]
            return list(await asyncio.gather(*requests))

    statuses = asyncio.run(burst())
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert all(r.status_code in (200, 429) for r in statuses)
    problem = limited[0].json()
    assert problem["code"] == "rate_limited"
    retry_after_s = int(limited[0].headers["Retry-After"])
    assert 1 <= retry_after_s <= 5
    with httpx.Client(base_url=api.throttled_url, timeout=10) as client:
        # Another principal is not affected by this one's bucket.
        other = api.auth("auditor", sub=unique("auditor"))
        assert client.get("/v1/markets", headers=other).status_code == 200
        time.sleep(retry_after_s)
        assert client.get("/v1/markets", headers=headers).status_code == 200


def test_overload_is_shed_at_once_with_503(api: Api, world: World) -> None:
    """The tight worker admits 2 ledger requests at a time: a burst of 120
    concurrent reads gets some 503 `overloaded` at once, none times out,
    and the worker keeps serving afterwards.

    The burst must really be concurrent. Sent by a client on a busy machine
    it can arrive so slowly that the worker answers each read before the
    next comes in (a CI failure), so the worker is paused (SIGSTOP) while all
    120 requests are written into their sockets, then resumed: it finds them
    all waiting at once."""
    host, port = api.tight_url.removeprefix("http://").split(":")
    path = f"/v1/markets/{world.market_id}"
    requests = [
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Authorization: {api.auth('auditor', sub=unique('reader'))['Authorization']}\r\n\r\n"
        ).encode()
        for _ in range(120)
    ]

    async def send(request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The kernel completes the handshake for the listening socket's
        # backlog and buffers the request while the worker is stopped.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        return reader, writer

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, str]:
        raw = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {name.lower(): value for name, value in headers.items()}
        if status == 200:
            return status, ""
        assert headers.get("retry-after") == "1", raw
        return status, json.loads(body)["code"]

    async def burst() -> tuple[list[tuple[int, str]], float]:
        api.tight_worker.pause()
        try:
            connections = await asyncio.wait_for(
                asyncio.gather(*(send(request) for request in requests)), timeout=30
            )
        finally:
            api.tight_worker.resume()
        started = time.perf_counter()
        results = await asyncio.gather(*(answer(*connection) for connection in connections))
        return list(results), time.perf_counter() - started

    results, elapsed_s = asyncio.run(burst())
    statuses = {status for status, _ in results}
    assert statuses <= {200, 503}, statuses
    shed = [code for status, code in results if status == 503]
    assert shed, "a burst 60x the admission limit shed nothing"
    assert set(shed) == {"overloaded"}
    assert any(status == 200 for status, _ in results)
    assert elapsed_s < 10, f"the burst took {elapsed_s:.1f} s: requests queued instead"
    with httpx.Client(base_url=api.tight_url, timeout=10) as client:
        headers = api.auth("auditor", sub=unique("reader"))
        assert client.get(path, headers=headers).status_code == 200
