"""The PostgreSQL baseline workload: bet placement, two ways.

What a team would build instead of ironbook, measured on the same machine
against `LocalPostgresPair` (a primary with a synchronous standby):

- `per_bet`: one transaction per bet: debit the account with a balance check,
  insert the bet, insert two ledger rows (player debit, stakes-held credit).
  The stakes-held balance is derived from the ledger, not updated per bet (one
  hot row would serialise every transaction).
- `batched`: the expert version: a plpgsql function placing a batch of bets
  per call, rows locked in account order (no deadlocks), each bet with its own
  balance check and ledger rows. A bet's latency is its call's latency.

`run_baseline()` starts the servers, runs both modes and returns one result
per mode. Needs the `bench` extra (asyncpg).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import asyncpg

from ironbook.adapters.postgres.server import LocalPostgresPair
from ironbook.benchmarks.stats import percentile_ms

STAKES_HELD_ACCOUNT = 0
OPENING_BALANCE_MINOR = 1_000_000_00
STAKE_MIN_MINOR = 100
STAKE_MAX_MINOR = 5_000

SCHEMA = """
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    balance_minor bigint NOT NULL CHECK (balance_minor >= 0)
);
CREATE TABLE bets (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL,
    stake_minor bigint NOT NULL,
    odds_hundredths integer NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    bet_id bigint NOT NULL,
    account_id bigint NOT NULL,
    amount_minor bigint NOT NULL
);

-- One call places many bets. Rows are locked in account order first, so
-- concurrent calls never deadlock; then each bet is checked and booked on
-- its own: a rejected bet (NULL in the result) does not affect the others.
CREATE FUNCTION place_bets(p_accounts bigint[], p_stakes bigint[], p_odds integer[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    results bigint[] := '{}';
    i integer;
    new_bet bigint;
BEGIN
    PERFORM 1 FROM accounts WHERE id = ANY(p_accounts) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. array_length(p_accounts, 1) LOOP
        UPDATE accounts SET balance_minor = balance_minor - p_stakes[i]
         WHERE id = p_accounts[i] AND balance_minor >= p_stakes[i];
        IF NOT FOUND THEN
            results := results || NULL::bigint;
            CONTINUE;
        END IF;
        INSERT INTO bets (account_id, stake_minor, odds_hundredths)
             VALUES (p_accounts[i], p_stakes[i], p_odds[i])
          RETURNING id INTO new_bet;
        INSERT INTO ledger (bet_id, account_id, amount_minor)
             VALUES (new_bet, p_accounts[i], -p_stakes[i]),
                    (new_bet, 0, p_stakes[i]);
        results := results || new_bet;
    END LOOP;
    RETURN results;
END;
$$;
"""

DEBIT = """
UPDATE accounts SET balance_minor = balance_minor - $2::bigint
 WHERE id = $1::bigint AND balance_minor >= $2::bigint
"""
INSERT_BET = """
INSERT INTO bets (account_id, stake_minor, odds_hundredths)
     VALUES ($1::bigint, $2::bigint, $3::integer) RETURNING id
"""
INSERT_LEDGER = """
INSERT INTO ledger (bet_id, account_id, amount_minor)
     VALUES ($1::bigint, $2::bigint, -$3::bigint), ($1::bigint, 0, $3::bigint)
"""
PLACE_BETS = "SELECT place_bets($1::bigint[], $2::bigint[], $3::integer[])"


@dataclass(frozen=True)
class BaselineSettings:
    accounts: int = 100_000
    concurrency: int = 32
    per_bet_count: int = 20_000
    batched_count: int = 100_000
    batch_size: int = 50
    seed: int = 1
    synchronous: bool = True
    modes: tuple[str, ...] = ("per_bet", "batched")


@dataclass(frozen=True)
class Bet:
    account_id: int
    stake_minor: int
    odds_hundredths: int


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0


def make_bets(count: int, accounts: int, seed: int) -> list[Bet]:
    rng = random.Random(seed)
    return [
        Bet(
            account_id=rng.randint(1, accounts),
            stake_minor=rng.randint(STAKE_MIN_MINOR, STAKE_MAX_MINOR),
            odds_hundredths=rng.randint(110, 1000),
        )
        for _ in range(count)
    ]


async def prepare(pool: asyncpg.Pool, accounts: int) -> None:
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
        await conn.execute(
            "INSERT INTO accounts (id, balance_minor) "
            "SELECT g, $1::bigint FROM generate_series(1, $2::bigint) g",
            OPENING_BALANCE_MINOR,
            accounts,
        )
        await conn.execute(
            "INSERT INTO accounts (id, balance_minor) VALUES ($1::bigint, 0)",
            STAKES_HELD_ACCOUNT,
        )
        await conn.execute("VACUUM ANALYZE")


async def reset(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE bets, ledger")
        await conn.execute(
            "UPDATE accounts SET balance_minor = CASE WHEN id = 0 THEN 0 ELSE $1::bigint END",
            OPENING_BALANCE_MINOR,
        )
        await conn.execute("VACUUM ANALYZE")


async def place_one(conn: asyncpg.Connection, bet: Bet) -> bool:
    async with conn.transaction():
        status = await conn.execute(DEBIT, bet.account_id, bet.stake_minor)
        if status != "UPDATE 1":
            return False
        bet_id = await conn.fetchval(
            INSERT_BET, bet.account_id, bet.stake_minor, bet.odds_hundredths
        )
        await conn.execute(INSERT_LEDGER, bet_id, bet.account_id, bet.stake_minor)
    return True


async def run_per_bet(pool: asyncpg.Pool, bets: list[Bet], concurrency: int) -> Tally:
    tally = Tally()
    queue = iter(bets)

    async def worker() -> None:
        async with pool.acquire() as conn:
            for bet in queue:
                started = time.perf_counter()
                ok = await place_one(conn, bet)
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                tally.accepted += ok
                tally.rejected += not ok

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return tally


async def run_batched(
    pool: asyncpg.Pool, bets: list[Bet], concurrency: int, batch_size: int
) -> Tally:
    tally = Tally()
    batches = iter([bets[i : i + batch_size] for i in range(0, len(bets), batch_size)])

    async def worker() -> None:
        async with pool.acquire() as conn:
            for batch in batches:
                started = time.perf_counter()
                results = await conn.fetchval(
                    PLACE_BETS,
                    [b.account_id for b in batch],
                    [b.stake_minor for b in batch],
                    [b.odds_hundredths for b in batch],
                )
                latency_ms = (time.perf_counter() - started) * 1000
                # Every bet in the call waited for the whole call.
                tally.latencies_ms.extend([latency_ms] * len(batch))
                accepted = sum(1 for r in results if r is not None)
                tally.accepted += accepted
                tally.rejected += len(batch) - accepted

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return tally


async def verify(pool: asyncpg.Pool, tally: Tally) -> None:
    """Money is conserved and every accepted bet is booked once."""
    async with pool.acquire() as conn:
        bets = await conn.fetchval("SELECT count(*) FROM bets")
        ledger_sum = await conn.fetchval("SELECT coalesce(sum(amount_minor), 0) FROM ledger")
        ledger_rows = await conn.fetchval("SELECT count(*) FROM ledger")
        held = await conn.fetchval(
            "SELECT coalesce(sum(amount_minor), 0) FROM ledger WHERE account_id = 0"
        )
        debited = await conn.fetchval(
            "SELECT $1::bigint * count(*) - sum(balance_minor) FROM accounts WHERE id <> 0",
            OPENING_BALANCE_MINOR,
        )
    assert bets == tally.accepted, (bets, tally.accepted)
    assert ledger_rows == 2 * bets
    assert ledger_sum == 0
    assert held == debited, (held, debited)


def report(
    mode: str, tally: Tally, elapsed_s: float, settings: BaselineSettings
) -> dict[str, object]:
    placed = tally.accepted + tally.rejected
    return {
        "mode": mode,
        "bets_per_s": round(placed / elapsed_s, 1),
        "p50_ms": percentile_ms(tally.latencies_ms, 0.50),
        "p99_ms": percentile_ms(tally.latencies_ms, 0.99),
        "p999_ms": percentile_ms(tally.latencies_ms, 0.999),
        "bets": placed,
        "accepted": tally.accepted,
        "rejected": tally.rejected,
        "elapsed_s": round(elapsed_s, 3),
        "accounts": settings.accounts,
        "concurrency": settings.concurrency,
        "batch_size": settings.batch_size if mode == "batched" else 1,
        "synchronous_standby": settings.synchronous,
    }


async def measure(pg: LocalPostgresPair, settings: BaselineSettings) -> dict[str, object]:
    pool = await asyncpg.create_pool(
        pg.dsn(), min_size=settings.concurrency, max_size=settings.concurrency
    )
    try:
        await prepare(pool, settings.accounts)
        results: dict[str, object] = {}
        for index, mode in enumerate(settings.modes):
            if index:
                await reset(pool)
            count = settings.per_bet_count if mode == "per_bet" else settings.batched_count
            bets = make_bets(count, settings.accounts, seed=settings.seed + index)
            started = time.perf_counter()
            if mode == "per_bet":
                tally = await run_per_bet(pool, bets, settings.concurrency)
            else:
                tally = await run_batched(pool, bets, settings.concurrency, settings.batch_size)
            elapsed_s = time.perf_counter() - started
            await verify(pool, tally)
            results[mode] = report(mode, tally, elapsed_s, settings)
        return results
    finally:
        await pool.close()


def run_baseline(
    *,
    accounts: int = 100_000,
    concurrency: int = 32,
    per_bet_count: int = 20_000,
    batched_count: int = 100_000,
    batch_size: int = 50,
    seed: int = 1,
    synchronous: bool = True,
    modes: tuple[str, ...] = ("per_bet", "batched"),
) -> dict[str, dict[str, object]]:
    """Start a primary + standby, place bets each way, stop; one result per
    mode (`bets_per_s`, `p50_ms`, `p99_ms`, `p999_ms`, ...)."""
    settings = BaselineSettings(
        accounts=accounts,
        concurrency=concurrency,
        per_bet_count=per_bet_count,
        batched_count=batched_count,
        batch_size=batch_size,
        seed=seed,
        synchronous=synchronous,
        modes=modes,
    )
    with LocalPostgresPair(synchronous=synchronous) as pg:
        pg.start()
        results = asyncio.run(measure(pg, settings))
    return {mode: result for mode, result in results.items() if isinstance(result, dict)}
