"""`python bench/odds.py [options]`: the same as `ironbook bench odds [options]`."""

import sys

from ironbook.benchmarks.odds import main

if __name__ == "__main__":
    sys.exit(main())
