"""`python bench/revocation.py [options]`: the same as `ironbook bench revocation [options]`."""

import sys

from ironbook.benchmarks.revocation import main

if __name__ == "__main__":
    sys.exit(main())
