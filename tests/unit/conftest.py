"""Hypothesis profiles for the unit suite.

`ci` (the default) is derandomized and keeps no example database, so a run is
the same on every machine; `dev` explores with fresh randomness. Choose one
with `HYPOTHESIS_PROFILE=dev`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
