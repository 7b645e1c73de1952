"""`python bench/audit.py [options]`: the same as `ironbook bench audit [options]`."""

import sys

from ironbook.benchmarks.audit import main

if __name__ == "__main__":
    sys.exit(main())
