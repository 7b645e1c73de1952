"""Ledger benchmark: ironbook vs PostgreSQL (per-bet and batched), and failover.

    python bench/ledger.py [--json] [--seconds 15] [--no-postgres]

The implementation lives in `ironbook.benchmarks.ledger` so that
`ironbook bench ledger` runs the same code; see its docstring.
"""

import sys

from ironbook.benchmarks.ledger import main

if __name__ == "__main__":
    sys.exit(main())
