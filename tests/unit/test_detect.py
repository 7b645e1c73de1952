"""The anomaly detectors and forecasts on synthetic series: a sudden step and
a gradual ramp are flagged, a calm noisy series is not, and the forecasts land
near the truth."""

from __future__ import annotations

import random

import pytest

from ironbook.services.detect import (
    Debounce,
    DetectorConfig,
    Direction,
    Forecast,
    HalfSpaceTrees,
    SeriesSpec,
    Watch,
    WatchConfig,
    WindowedGaussian,
    least_squares,
)

CONFIG = DetectorConfig()
ONSET = 400
LENGTH = 600


def _series(seed: int, shape: str) -> list[float]:
    rng = random.Random(seed)
    values = []
    for i in range(LENGTH):
        extra = 0.0
        if shape == "step" and i >= ONSET:
            extra = 40.0
        elif shape == "ramp" and i >= ONSET:
            extra = 0.3 * (i - ONSET)
        values.append(100.0 + rng.gauss(0, 5) + extra)
    return values


def _first_alert(detector: WindowedGaussian | HalfSpaceTrees, values: list[float]) -> int | None:
    """The index where a 3-in-a-row debounce fires first."""
    debounce = Debounce(confirm=3, calm=10)
    for i, value in enumerate(values):
        if debounce.update(detector.is_anomalous(detector.update(value))) == "fire":
            return i
    return None


DETECTORS = [WindowedGaussian, HalfSpaceTrees]


@pytest.mark.parametrize("kind", DETECTORS)
@pytest.mark.parametrize("seed", range(3))
def test_a_calm_noisy_series_raises_nothing(
    kind: type[WindowedGaussian | HalfSpaceTrees], seed: int
) -> None:
    assert _first_alert(kind(CONFIG, "both"), _series(seed, "calm")) is None


@pytest.mark.parametrize("kind", DETECTORS)
@pytest.mark.parametrize("seed", range(3))
def test_a_sudden_step_is_flagged_at_once(
    kind: type[WindowedGaussian | HalfSpaceTrees], seed: int
) -> None:
    first = _first_alert(kind(CONFIG, "up"), _series(seed, "step"))
    assert first is not None and ONSET <= first <= ONSET + 5


@pytest.mark.parametrize("seed", range(3))
def test_a_gradual_ramp_is_flagged_by_the_trees(seed: int) -> None:
    """0.3 a sample against noise of σ 5: ten samples in, the ramp is still
    inside one σ; the trees' baseline, which leaves the last samples out,
    sees it before 90 samples (27 units, 5.4σ)."""
    first = _first_alert(HalfSpaceTrees(CONFIG, "up"), _series(seed, "ramp"))
    assert first is not None and ONSET < first < ONSET + 90


@pytest.mark.parametrize("direction", ["down", "up"])
def test_only_the_watched_side_counts(direction: Direction) -> None:
    values = [v - 80.0 if i >= ONSET else v for i, v in enumerate(_series(1, "calm"))]
    first = _first_alert(WindowedGaussian(CONFIG, direction), values)
    assert (first is not None) == (direction == "down")


def test_a_flat_series_that_moves_a_little_is_not_an_alarm() -> None:
    gaussian = WindowedGaussian(CONFIG, "both")
    for _ in range(100):
        gaussian.update(1000.0)
    assert not gaussian.is_anomalous(gaussian.update(1000.5))
    assert gaussian.is_anomalous(gaussian.update(1100.0))


def test_least_squares_recovers_a_line() -> None:
    fit = least_squares([(t, 7.0 - 2.0 * t) for t in range(10)])
    assert fit is not None
    assert fit.slope_per_s == pytest.approx(-2.0)
    assert fit.value_now == pytest.approx(7.0 - 18.0)
    assert least_squares([(1.0, 2.0)]) is None
    assert least_squares([(1.0, 2.0), (1.0, 3.0)]) is None


@pytest.mark.parametrize("seed", range(3))
def test_a_disk_filling_at_a_steady_rate_is_forecast_near_the_truth(seed: int) -> None:
    """1 GB free, 2 MB/s written with noise of 5 MB per sample: full at 500 s."""
    rng = random.Random(seed)
    forecast = Forecast(window_samples=60, min_samples=10)
    seconds = None
    for t in range(200):
        seconds = forecast.update(float(t), 1e9 - 2e6 * t + rng.gauss(0, 5e6))
    assert seconds is not None
    assert seconds == pytest.approx(500 - 199, rel=0.15)


def test_a_steady_or_shrinking_usage_has_no_forecast() -> None:
    rng = random.Random(3)
    forecast = Forecast(window_samples=60, min_samples=10)
    for t in range(100):
        assert forecast.update(float(t), 5e8 + 1e5 * t + rng.gauss(0, 1e3)) is None
    assert forecast.update(100.0, 0.0) == 0.0


def test_a_forecast_needs_its_minimum_of_samples() -> None:
    forecast = Forecast(window_samples=60, min_samples=10)
    assert [forecast.update(float(t), 100.0 - t) for t in range(10)][-2] is None
    assert forecast.update(10.0, 90.0) == pytest.approx(90.0)


def test_debounce_fires_after_confirm_and_resolves_after_calm() -> None:
    debounce = Debounce(confirm=2, calm=3)
    steps = [True, False, True, True, True, False, False, True, False, False, False]
    assert [debounce.update(s) for s in steps] == [
        None, None, None, "fire", None, None, None, None, None, None, "resolve",
    ]  # fmt: skip


def test_debounce_fires_on_confirm_of_the_last_window_samples() -> None:
    """2 of the last 6: two anomalous samples four apart fire; two six apart
    (the first has left the window) do not."""
    debounce = Debounce(confirm=2, calm=3, window=6)
    steps = [True, False, False, False, False, False, True, False, False, True]
    assert [debounce.update(s) for s in steps] == [None] * 9 + ["fire"]
    assert [debounce.update(False) for _ in range(3)] == [None, None, "resolve"]
    # Resolved: the anomalies before it count no more.
    assert debounce.update(True) is None
    with pytest.raises(ValueError, match="confirm"):
        Debounce(confirm=3, calm=1, window=2)


def test_a_series_must_move_its_minimum_change_to_alert() -> None:
    """A flat series with a tiny spread whose value doubles its noise is
    far out in standard deviations; under `min_change` it raises nothing,
    and a move past it does."""
    config = WatchConfig(detectors=DetectorConfig(min_samples=10), confirm_samples=2)
    lag = SeriesSpec("replica_lag_entries", "anomaly", "up", "lag", min_change=50.0)
    watch = Watch(config)
    rng = random.Random(5)
    fired: list[tuple[str, float]] = []
    for t in range(200):
        value = rng.choice([0.0, 1.0])
        if 100 <= t < 110:
            value = 20.0  # 20σ out, but only 20 entries
        elif t >= 150:
            value = 400.0
        fired += [(f.detector, f.at_s) for f in watch.observe(lag, (), float(t), value) if
                  f.state == "firing"]  # fmt: skip
    assert fired and all(at_s >= 150 for _, at_s in fired)
    assert "windowed_gaussian" in {detector for detector, _ in fired}


def test_a_rate_must_move_its_share_of_the_baseline_to_alert() -> None:
    """Bets per second around 1,000 with a small spread: a swing of 15 %
    is far out in standard deviations and past the absolute minimum, but
    under the series' minimum share of its baseline (25 %); a drop by half
    alerts."""
    config = WatchConfig(detectors=DetectorConfig(min_samples=10), confirm_samples=2)
    bets = SeriesSpec(
        "bets_per_s", "anomaly", "both", "bets", min_change=5.0, min_change_ratio=0.25
    )
    assert bets.least_change(1_000.0) == 250.0
    assert bets.least_change(4.0) == 5.0
    watch = Watch(config)
    rng = random.Random(7)
    fired: list[float] = []
    for t in range(200):
        value = 1_000.0 + rng.uniform(-5.0, 5.0)
        if 100 <= t < 110:
            value = 1_150.0
        elif t >= 150:
            value = 500.0
        fired += [f.at_s for f in watch.observe(bets, (), float(t), value) if f.state == "firing"]
    assert fired and all(at_s >= 150 for at_s in fired)
