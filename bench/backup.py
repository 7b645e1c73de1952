"""`python bench/backup.py [options]`: the same as `ironbook bench backup [options]`."""

import sys

from ironbook.benchmarks.backup import main

if __name__ == "__main__":
    sys.exit(main())
