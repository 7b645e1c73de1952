"""PostgreSQL baseline: bet placement on a primary with a synchronous standby.

    ironbook bench pg-baseline --accounts 100000 --concurrency 32 --json

Two ways (see `ironbook.benchmarks.postgres`): `per_bet`, one
transaction per bet, what most teams write; `batched`, a plpgsql function
placing 50 bets per call with rows locked in account order, the expert
version. `synchronous_commit = on` with a synchronous standby: a bet is
acknowledged only when its WAL is on disk on both servers.

Requires the `bench` extra (`pip install -e '.[bench]'`, asyncpg) and the
PostgreSQL 15 server binaries (Debian: `apt-get install -y postgresql-15`).
"""

from __future__ import annotations

import argparse
import json
import sys

from ironbook.benchmarks.postgres import run_baseline


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ironbook bench pg-baseline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bets", type=int, default=20_000, help="bets in per-bet mode")
    parser.add_argument(
        "--batched-multiplier",
        type=int,
        default=5,
        help="batched mode places this many times --bets (it is much faster)",
    )
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--mode", choices=["per_bet", "batched", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--async-standby", action="store_true", help="asynchronous standby (less durable)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = run_baseline(
        accounts=args.accounts,
        concurrency=args.concurrency,
        per_bet_count=args.bets,
        batched_count=args.bets * args.batched_multiplier,
        batch_size=args.batch_size,
        seed=args.seed,
        synchronous=not args.async_standby,
        modes=("per_bet", "batched") if args.mode == "both" else (args.mode,),
    )
    if args.json:
        print(json.dumps(results))
    else:
        for result in results.values():
            print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
