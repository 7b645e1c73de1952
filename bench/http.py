"""HTTP benchmark: bets/s and p50/p99 through the gateway, and a 10x flood.

    python bench/http.py [--json] [--workers 2] [--seconds 10] [--connections 64]

The implementation lives in `ironbook.benchmarks.http_api`; see its docstring.
"""

import sys
from pathlib import Path

# This file is named like the standard library's `http` package: drop its own
# directory from the import path before anything imports `http.client`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from ironbook.benchmarks.http_api import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
