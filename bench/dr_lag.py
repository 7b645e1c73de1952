"""`python bench/dr_lag.py [options]`: the same as `ironbook bench dr-lag [options]`."""

import sys

from ironbook.benchmarks.dr_lag import main

if __name__ == "__main__":
    sys.exit(main())
