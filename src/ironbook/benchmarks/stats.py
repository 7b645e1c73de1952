"""The statistics benchmarks report: percentiles and paired ratios."""

from __future__ import annotations

import statistics
from typing import Any


def percentile_ms(latencies_ms: list[float], fraction: float) -> float | None:
    """The `fraction` quantile (nearest rank) of the samples, None if there are none."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


def round_ratios(rounds: list[dict[int, dict[str, Any]]], rate: int) -> list[float | None]:
    """Per round: bets/s with the feed at `rate` over bets/s without it, both
    measured within the same round, minutes apart at most. The run drifts (bets
    per second fell by a third over some runs, as the state grows): a ratio of
    phases from different rounds would measure the drift as well as the feed."""
    return [
        round(r[rate]["bets_per_s"] / r[0]["bets_per_s"], 3) if r[0]["bets_per_s"] else None
        for r in rounds
    ]


def median_or_none(values: list[float | None]) -> float | None:
    """The median of the known values, None if none is known."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None
