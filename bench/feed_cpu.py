"""What the odds feed costs the cluster in CPU, with no feed and at each rate.

    python bench/feed_cpu.py [--json] [--rates 1000,5000]

The implementation lives in `ironbook.benchmarks.feed_cpu`; see its
docstring (--help).
"""

import sys
from pathlib import Path

# bench/http.py is named like the standard library's `http` package: keep this
# directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from ironbook.benchmarks.feed_cpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
