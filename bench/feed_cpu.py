"""`python bench/feed_cpu.py [options]`: the same as `ironbook bench feed-cpu [options]`."""

import sys

from ironbook.benchmarks.feed_cpu import main

if __name__ == "__main__":
    sys.exit(main())
