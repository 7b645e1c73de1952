"""`python bench/pg_baseline.py [options]`: the same as `ironbook bench pg-baseline [options]`."""

import sys

from ironbook.benchmarks.pg_baseline import main

if __name__ == "__main__":
    sys.exit(main())
