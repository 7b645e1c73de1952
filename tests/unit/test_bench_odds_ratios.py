"""The odds benchmark's throughput ratio: each round's feed phase over the same
round's no-feed phase, then the median, so that a run whose throughput drifts
(the state grows) does not charge the drift to the feed."""

from __future__ import annotations

from typing import Any

from ironbook.benchmarks.stats import median_or_none, round_ratios


def _round(no_feed: float, feed_1000: float, feed_5000: float) -> dict[int, dict[str, Any]]:
    return {
        0: {"bets_per_s": no_feed},
        1_000: {"bets_per_s": feed_1000},
        5_000: {"bets_per_s": feed_5000},
    }


def test_a_drifting_run_gives_the_feeds_own_ratio() -> None:
    # Throughput falls by a third over the run; within each round the feed
    # at 1,000/s costs 10 %.
    rounds = [_round(30_000, 27_000, 24_000), _round(20_000, 18_000, 16_000)]
    assert round_ratios(rounds, 1_000) == [0.9, 0.9]
    assert median_or_none(round_ratios(rounds, 1_000)) == 0.9
    assert round_ratios(rounds, 5_000) == [0.8, 0.8]
    rounds[1] = _round(20_000, 27_000, 16_000)
    assert median_or_none(round_ratios(rounds, 1_000)) == 1.125


def test_a_round_without_bets_is_left_out() -> None:
    rounds = [_round(0, 10, 10), _round(100, 70, 60), _round(100, 90, 60)]
    assert round_ratios(rounds, 1_000) == [None, 0.7, 0.9]
    assert median_or_none(round_ratios(rounds, 1_000)) == 0.8
    assert median_or_none([None]) is None
