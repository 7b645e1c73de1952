"""`python bench/snapshot.py [options]`: the same as `ironbook bench snapshot [options]`."""

import sys

from ironbook.benchmarks.snapshot import main

if __name__ == "__main__":
    sys.exit(main())
