"""`python bench/ledger.py [options]`: the same as `ironbook bench ledger [options]`."""

import sys

from ironbook.benchmarks.ledger import main

if __name__ == "__main__":
    sys.exit(main())
