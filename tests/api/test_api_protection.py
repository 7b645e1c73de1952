"""Traffic protection against real workers: rate limits and load shedding."""

from __future__ import annotations

import asyncio
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
    and the worker keeps serving afterwards."""
    tokens = [api.auth("auditor", sub=unique("reader")) for _ in range(120)]
    path = f"/v1/markets/{world.market_id}"

    async def one(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, float, str]:
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        code = response.json().get("code", "") if response.status_code != 200 else ""
        retry_after = response.headers.get("Retry-After", "")
        assert response.status_code == 200 or retry_after == "1"
        return response.status_code, time.perf_counter() - started, code

    async def burst() -> list[tuple[int, float, str]]:
        limits = httpx.Limits(max_connections=120)
        async with httpx.AsyncClient(base_url=api.tight_url, timeout=30, limits=limits) as client:
            await client.get("/healthz")
            return list(await asyncio.gather(*(one(client, headers) for headers in tokens)))

    started = time.perf_counter()
    results = asyncio.run(burst())
    elapsed_s = time.perf_counter() - started
    statuses = {status for status, _, _ in results}
    assert statuses <= {200, 503}, statuses
    shed = [(seconds, code) for status, seconds, code in results if status == 503]
    assert shed, "a burst 60x the admission limit shed nothing"
    assert {code for _, code in shed} == {"overloaded"}
    assert any(status == 200 for status, _, _ in results)
    assert elapsed_s < 10, f"the burst took {elapsed_s:.1f} s: requests queued instead"
    with httpx.Client(base_url=api.tight_url, timeout=10) as client:
        assert client.get(path, headers=tokens[0]).status_code == 200
