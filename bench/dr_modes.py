"""`python bench/dr_modes.py [options]`: the same as `ironbook bench dr-modes [options]`."""

import sys

from ironbook.benchmarks.dr_modes import main

if __name__ == "__main__":
    sys.exit(main())
