"""`python bench/settle.py [options]`: the same as `ironbook bench settle [options]`."""

import sys

from ironbook.benchmarks.settle import main

if __name__ == "__main__":
    sys.exit(main())
