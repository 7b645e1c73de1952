"""`python bench/restore.py [options]`: the same as `ironbook bench restore [options]`."""

import sys

from ironbook.benchmarks.restore import main

if __name__ == "__main__":
    sys.exit(main())
