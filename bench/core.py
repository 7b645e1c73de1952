"""`python bench/core.py [options]`: the same as `ironbook bench core [options]`."""

import sys

from ironbook.benchmarks.pure_core import main

if __name__ == "__main__":
    sys.exit(main())
