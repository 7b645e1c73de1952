"""Odds benchmark: feed -> 1,000 WebSocket subscribers latency, and bets/s
with the feed off, at 1,000 and at 5,000 price changes/s.

    python bench/odds.py [--json] [--quick]

The implementation lives in `ironbook.benchmarks.odds` so that
`ironbook bench odds` runs the same code; see its docstring (--help).
"""

import sys
from pathlib import Path

# bench/http.py is named like the standard library's `http` package: keep this
# directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from ironbook.benchmarks.odds import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
