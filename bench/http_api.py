"""`python bench/http_api.py [options]`: the same as `ironbook bench http [options]`."""

import sys

from ironbook.benchmarks.http_api import main

if __name__ == "__main__":
    sys.exit(main())
