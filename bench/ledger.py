"""Ledger benchmark: ironbook vs PostgreSQL (per-bet and batched), and failover.

    python bench/ledger.py [--json] [--seconds 15] [--no-postgres]

The implementation lives in `ironbook.benchmarks.ledger` so that
`ironbook bench ledger` runs the same code; see its docstring.
"""

import sys
from pathlib import Path

# bench/http.py is named like the standard library's `http` package: keep this
# directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from ironbook.benchmarks.ledger import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
