"""A share of the chaos workload sent through the HTTP gateway, so that
killing a gateway worker (`gateway_kill`) is a fault the history can judge.

Each HTTP client places bets, deposits and withdraws on the same accounts and
markets as the NATS clients, with an `Idempotency-Key` per operation: a
dropped connection, a 5xx or a 429 is retried with the same key (on whichever
worker the port hands it to) until the client's deadline, then recorded as
`info`. The request id the ledger sees is the gateway's
`keyed_request_id(token subject, key)`, computed here too, so the checker
finds every HTTP operation in the log like any other.

HTTP replies are not the core's encoded outcome, so these operations carry no
`reply_hex`: they are judged for lost / duplicated / applied-after-refusal,
not for the exact reply.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ironbook import core
from ironbook.chaos.history import HistoryRecorder
from ironbook.chaos.workload import SELECTIONS, Workload, selection_odds
from ironbook.core.odds import format_decimal
from ironbook.services.gateway.auth import SigningKey, mint_token
from ironbook.services.gateway.idempotency import keyed_request_id

CASHIER_SUB = "cashier:chaos"
TOKEN_REFRESH_S = 1_800
HTTP_CLIENT_PREFIX = "h"
"""HTTP clients are h0, h1, ... in the history (NATS clients are c0, c1, ...)."""
REQUEST_TIMEOUT_S = 2.0
RETRY_PAUSE_S = (0.05, 0.3)
GENEROUS_LIMITS = {
    "IRONBOOK_GATEWAY_PRINCIPAL_RATE_PER_S": "100000",
    "IRONBOOK_GATEWAY_PRINCIPAL_BURST": "100000",
    "IRONBOOK_GATEWAY_IP_RATE_PER_S": "100000",
    "IRONBOOK_GATEWAY_IP_BURST": "100000",
}
"""The chaos gateway must not throttle its own workload."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, Any]


class _Retry(Exception):
    """No definite answer yet: ask again with the same key."""


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=REQUEST_TIMEOUT_S) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError):
        return False


class HttpClients:
    """`clients` loops over HTTP, recording into the workload's recorder."""

    def __init__(
        self,
        base_url: str,
        secret: SigningKey,
        workload: Workload,
        recorder: HistoryRecorder,
        *,
        deadline_ms: int,
        seed: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.workload = workload
        self.recorder = recorder
        self.deadline_ms = deadline_ms
        self.seed = seed
        self._secret = secret
        self._tokens: dict[tuple[str, str | None], tuple[str, float]] = {}
        """(role, account) -> (token, monotonic time it was minted)."""
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, seconds: float, clients: int) -> None:
        """Run until `seconds` pass or `stop()` is called; a client that
        raises ends the run (see `Workload.run`)."""
        deadline = time.monotonic() + seconds
        async with asyncio.TaskGroup() as group:
            for n in range(clients):
                group.create_task(self._client_loop(n, deadline))

    def _token(self, role: str, account: str | None = None, sub: str | None = None) -> str:
        """A token for the role, minted again once it is `TOKEN_REFRESH_S` old:
        the gateways refuse staff tokens that live longer than an hour, and a
        soak runs for longer."""
        cached = self._tokens.get((role, account))
        now = time.monotonic()
        if cached is None or now - cached[1] > TOKEN_REFRESH_S:
            cached = (mint_token(self._secret, role=role, account_id=account, sub=sub), now)
            self._tokens[(role, account)] = cached
        return cached[0]

    async def _client_loop(self, n: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1_000 + 500 + n)
        name = f"{HTTP_CLIENT_PREFIX}{n}"
        count = 0
        workload = self.workload
        config = workload.config
        while not self._stop.is_set() and time.monotonic() < deadline:
            count += 1
            hot = rng.random() < config.hot_share
            account = rng.choice(workload.hot_accounts if hot else workload.accounts)
            await self._one(rng, name, f"{name}-{count}", account)

    async def _one(self, rng: random.Random, client: str, key: str, account: str) -> None:
        roll = rng.random()
        if roll < 0.75:
            selection = rng.randrange(SELECTIONS)
            odds = selection_odds(selection)
            market = self.workload.market_id
            stake = rng.choice((50, 100, 500, 2_000))
            token = self._token("bettor", account)
            sub = f"bettor:{account}"
            path = "/v1/bets"
            body: dict[str, Any] = {
                "account_id": account,
                "stake_minor": stake,
                "legs": [
                    {
                        "market_id": market,
                        "selection_id": f"s{selection}",
                        "odds": format_decimal(odds),
                    }
                ],
            }
            command: core.AnyCommand = core.PlaceBet(
                request_id=keyed_request_id(sub, key),
                account_id=account,
                stake_minor=stake,
                legs=(core.BetLeg(market, f"s{selection}", odds),),
            )
        elif roll < 0.9:
            token, sub = self._token("cashier", sub=CASHIER_SUB), CASHIER_SUB
            path = f"/v1/accounts/{account}/deposits"
            body = {"amount_minor": 700, "reason": "chaos workload top-up"}
            command = core.Deposit(
                request_id=keyed_request_id(sub, key),
                account_id=account,
                amount_minor=700,
                reason="chaos workload top-up",
            )
        else:
            token, sub = self._token("bettor", account), f"bettor:{account}"
            path = f"/v1/accounts/{account}/withdrawals"
            body = {"amount_minor": 900}
            command = core.Withdraw(
                request_id=keyed_request_id(sub, key), account_id=account, amount_minor=900
            )
        invocation = self.recorder.invoke(client, command)
        give_up_at = time.monotonic() + self.deadline_ms / 1000
        last_error = ""
        while True:
            try:
                answer = await asyncio.to_thread(self._post, path, token, key, body)
                outcome = _judge(answer)
            except _Retry as error:
                last_error = str(error)
                if time.monotonic() >= give_up_at:
                    invocation.give_up(f"http: gave up after {self.deadline_ms} ms: {last_error}")
                    return
                await asyncio.sleep(rng.uniform(*RETRY_PAUSE_S))
                continue
            code = answer.body.get("code")
            detail = f"http {answer.status}" + (f" {code}" if code else "")
            invocation.complete_without_reply("ok" if outcome == "ok" else "fail", detail)
            return

    def _post(self, path: str, token: str, key: str, body: dict[str, Any]) -> _Answer:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": key,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:
                return _Answer(reply.status, _json(reply.read()))
        except urllib.error.HTTPError as error:
            return _Answer(error.code, _json(error.read()))
        except (OSError, ValueError) as error:
            raise _Retry(f"{type(error).__name__}: {error}") from error


def _json(data: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(data or b"{}")
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _judge(answer: _Answer) -> str:
    """`ok`, `fail` (refused: the ledger's rejection codes, or the edge's for
    a request it never passed on), or `_Retry` (no definite answer)."""
    if 200 <= answer.status < 300:
        return "ok"
    if answer.status in (408, 429) or answer.status >= 500:
        raise _Retry(f"{answer.status} {answer.body.get('code', '')}")
    return "fail"
