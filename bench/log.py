"""`python bench/log.py [options]`: the same as `ironbook bench log [options]`."""

import sys

from ironbook.benchmarks.log import main

if __name__ == "__main__":
    sys.exit(main())
