"""Online anomaly detectors and exhaustion forecasts over metric series.

Pure: values and their timestamps come in as arguments; no I/O, no clock, no
randomness beyond a seed. `ironbook watch` feeds them from Prometheus and
`ironbook bench detect` judges them.

- `WindowedGaussian`: the Numenta Anomaly Benchmark's baseline. The mean and
  standard deviation of the last `window` values; a new value's score is one
  minus its tail probability under that Gaussian (0.5 at the mean, → 1 far
  out on the watched side).
- `HalfSpaceTrees`: river's online isolation forest (Tan, Ting & Liu 2011)
  over two features of each value against a baseline that leaves out the most
  recent `gap` values, so a slow ramp cannot drag its own baseline along: the
  value's standard score, and the standard score of the mean of the last few
  values. Each is squashed into [0, 1] (the trees' fixed limits).
- `Forecast`: a least-squares line through the last `window` samples of a
  headroom series (free bytes, bytes under a limit); the seconds until the
  line reaches zero, as Prometheus's `predict_linear` would give.
- `Debounce`: an alert fires once `confirm` of the last `window` samples are
  anomalous and resolves after `calm` normal ones in a row.

A sample of an anomaly series counts as anomalous only when it has also moved
at least its series' `min_change` (an absolute amount), and `min_change_ratio`
of the mean, from the windowed Gaussian's mean on the watched side: on a flat
series a wiggle far out in standard deviations is still a wiggle.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

Direction = Literal["up", "down", "both"]
"""Which side of the baseline is trouble: latency `up`, free memory `down`,
bets/s `both` (a surge, or an outage)."""

_SQUASH_Z = 4.0
"""Standard scores are squashed with a logistic of z / 4: ±3σ stays within
[0.32, 0.68], ±12σ reaches [0.05, 0.95]."""
_RECENT_SAMPLES = 5
_MIN_STD_FRACTION = 1e-3
"""A perfectly flat baseline has no spread: the standard deviation is never
taken below this fraction of the baseline's magnitude (or 1e-9), so a flat
series that moves a little is not an infinite-sigma event."""


def _floor_std(std: float, mean: float) -> float:
    return max(std, abs(mean) * _MIN_STD_FRACTION, 1e-9)


def _signed(z: float, direction: Direction) -> float:
    """The standard score as seen from the side that matters."""
    if direction == "up":
        return z
    if direction == "down":
        return -z
    return abs(z)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    window_samples: int = 120
    """Values in the windowed Gaussian's window and in the trees' baseline."""
    min_samples: int = 30
    """No score (0.0) until this many values were seen."""
    gap_samples: int = 20
    """Most recent values left out of the trees' baseline."""
    gaussian_threshold: float = 0.9999
    """A windowed-Gaussian score at or above this is anomalous (≈ 3.7σ)."""
    trees_threshold: float = 0.97
    """A half-space-trees score at or above this is anomalous."""
    trees: int = 25
    tree_height: int = 8
    trees_window_samples: int = 120
    """Values in the trees' reference window (their model is rebuilt from the
    latest window each time one fills)."""
    seed: int = 1


class WindowedGaussian:
    """NAB's windowed Gaussian over one series."""

    def __init__(self, config: DetectorConfig, direction: Direction) -> None:
        self._config = config
        self._direction = direction
        self._window: deque[float] = deque(maxlen=config.window_samples)

    def update(self, value: float) -> float:
        """Score `value` against the window, then add it to the window."""
        score = self._score(value)
        self._window.append(value)
        return score

    def _score(self, value: float) -> float:
        if len(self._window) < self._config.min_samples:
            return 0.0
        mean = statistics.fmean(self._window)
        std = _floor_std(statistics.pstdev(self._window, mean), mean)
        z = _signed((value - mean) / std, self._direction)
        tail = 0.5 * math.erfc(z / math.sqrt(2))
        return 1.0 - tail

    def is_anomalous(self, score: float) -> bool:
        return score >= self._config.gaussian_threshold

    def mean(self) -> float | None:
        """The window's mean (None while it is empty)."""
        return statistics.fmean(self._window) if self._window else None


class _OnlineScorer(Protocol):
    """The part of a river anomaly detector used here (river's methods carry
    no annotations)."""

    def score_one(self, x: dict[str, float]) -> float: ...

    def learn_one(self, x: dict[str, float]) -> None: ...


class HalfSpaceTrees:
    """river's half-space trees over one series (see the module's docstring)."""

    _LIMITS: dict[Hashable, tuple[float, float]] = {"level": (0.0, 1.0), "recent": (0.0, 1.0)}

    def __init__(self, config: DetectorConfig, direction: Direction) -> None:
        self._config = config
        self._direction = direction
        self._history: deque[float] = deque(maxlen=config.window_samples + config.gap_samples)
        # river pulls in scipy (seconds to import): only a watcher pays for it,
        # never the other processes whose composition root names this module.
        from river.anomaly import HalfSpaceTrees as RiverHalfSpaceTrees  # noqa: PLC0415

        self._model = cast(
            _OnlineScorer,
            RiverHalfSpaceTrees(
                n_trees=config.trees,
                height=config.tree_height,
                window_size=config.trees_window_samples,
                limits=dict(self._LIMITS),
                seed=config.seed,
            ),
        )

    def features(self, value: float) -> dict[str, float] | None:
        """The value's features against the baseline; None until there is one."""
        history = list(self._history)
        gap = self._config.gap_samples
        if len(history) < gap + self._config.min_samples:
            return None
        baseline = history[:-gap]
        mean = statistics.fmean(baseline)
        std = _floor_std(statistics.pstdev(baseline, mean), mean)
        recent = statistics.fmean([*history[-(_RECENT_SAMPLES - 1) :], value])
        # The mean of n values spreads √n times less than one value.
        recent_z = (recent - mean) / std * math.sqrt(_RECENT_SAMPLES)
        return {
            "level": _squash(_signed((value - mean) / std, self._direction)),
            "recent": _squash(_signed(recent_z, self._direction)),
        }

    def update(self, value: float) -> float:
        """Score `value`, then learn it."""
        features = self.features(value)
        self._history.append(value)
        if features is None:
            return 0.0
        score = float(self._model.score_one(features))
        self._model.learn_one(features)
        return score

    def is_anomalous(self, score: float) -> bool:
        return score >= self._config.trees_threshold


def _moved(change: float, direction: Direction, min_change: float) -> bool:
    """Whether `change` from the baseline is at least `min_change` on the watched side."""
    return _signed(change, direction) >= min_change


def _squash(z: float) -> float:
    """A standard score into (0, 1), the side that matters towards 1. The
    two-sided case (`abs`) lives in [0.5, 1)."""
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z / _SQUASH_Z))))


@dataclass(frozen=True, slots=True)
class Fit:
    slope_per_s: float
    value_now: float
    """The line's value at the last sample's time."""


def least_squares(samples: list[tuple[float, float]]) -> Fit | None:
    """The least-squares line through (t, value) samples; None with fewer
    than two distinct times."""
    if len(samples) < 2:
        return None
    t_mean = statistics.fmean(t for t, _ in samples)
    v_mean = statistics.fmean(v for _, v in samples)
    spread = sum((t - t_mean) ** 2 for t, _ in samples)
    if spread <= 0:
        return None
    slope = sum((t - t_mean) * (v - v_mean) for t, v in samples) / spread
    t_last = samples[-1][0]
    return Fit(slope_per_s=slope, value_now=v_mean + slope * (t_last - t_mean))


class Forecast:
    """Seconds until a headroom series reaches zero, from the last
    `window_samples` samples (Prometheus `predict_linear`)."""

    def __init__(self, window_samples: int, min_samples: int) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=window_samples)
        self._min_samples = min_samples

    def update(self, t_s: float, headroom: float) -> float | None:
        """Add a sample; the seconds until exhaustion, 0.0 when already
        exhausted, None when the headroom is not shrinking (or too few
        samples were seen)."""
        self._samples.append((t_s, headroom))
        if headroom <= 0:
            return 0.0
        if len(self._samples) < self._min_samples:
            return None
        fit = least_squares(list(self._samples))
        if fit is None or fit.slope_per_s >= 0:
            return None
        return max(0.0, fit.value_now / -fit.slope_per_s)


class Debounce:
    """Firing once `confirm` of the last `window` samples (default
    `confirm`: in a row) are anomalous, resolved after `calm` normal samples
    in a row."""

    def __init__(self, confirm: int, calm: int, window: int | None = None) -> None:
        if not 1 <= confirm <= (window or confirm):
            raise ValueError(f"confirm ({confirm}) must be within 1..window ({window})")
        self._confirm = confirm
        self._calm = calm
        self._recent: deque[bool] = deque(maxlen=window or confirm)
        self._calm_run = 0
        self.firing = False

    def update(self, anomalous: bool) -> Literal["fire", "resolve"] | None:
        """The transition this sample causes, if any."""
        self._recent.append(anomalous)
        if not self.firing:
            if anomalous and sum(self._recent) >= self._confirm:
                self.firing = True
                self._calm_run = 0
                return "fire"
            return None
        self._calm_run = 0 if anomalous else self._calm_run + 1
        if self._calm_run < self._calm:
            return None
        self.firing = False
        self._recent.clear()
        return "resolve"


SeriesKind = Literal["anomaly", "forecast"]
DetectorName = Literal["windowed_gaussian", "half_space_trees", "forecast"]
Labels = tuple[tuple[str, str], ...]
"""A series' own labels (instance, partition, server, ...), sorted."""


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    name: str
    kind: SeriesKind
    """`anomaly`: both detectors watch the value. `forecast`: the value is a
    headroom (free bytes) and its exhaustion is forecast."""
    direction: Direction = "up"
    summary: str = ""
    min_change: float = 0.0
    """An anomaly series' value counts as anomalous only this far (absolute,
    on the watched side) from the windowed Gaussian's mean."""
    min_change_ratio: float = 0.0
    """And at least this share of that mean's magnitude: for a rate, whose
    ordinary swings grow with it."""

    def least_change(self, mean: float) -> float:
        """How far from `mean` a value must move to count as anomalous."""
        return max(self.min_change, self.min_change_ratio * abs(mean))


@dataclass(frozen=True, slots=True)
class WatchConfig:
    detectors: DetectorConfig = DetectorConfig()
    confirm_samples: int = 2
    confirm_window_samples: int = 6
    """An alert fires once `confirm_samples` of the last this many are anomalous."""
    calm_samples: int = 10
    forecast_window_samples: int = 60
    forecast_horizon_s: float = 3_600.0
    """A forecast exhaustion sooner than this is a finding."""
    max_series: int = 1_000
    """Series tracked at most (each label set of each query is one); more are ignored."""


@dataclass(frozen=True, slots=True)
class Finding:
    """An alert starting (`firing`) or ending (`resolved`), with its evidence."""

    state: Literal["firing", "resolved"]
    detector: DetectorName
    series: str
    labels: Labels
    at_s: float
    value: float
    score: float | None = None
    forecast_s: float | None = None

    @property
    def key(self) -> tuple[DetectorName, str, Labels]:
        return self.detector, self.series, self.labels


class _Tracked:
    """The detectors of one series (one label set of one query)."""

    def __init__(self, spec: SeriesSpec, config: WatchConfig) -> None:
        self.gaussian: WindowedGaussian | None = None
        self.trees: HalfSpaceTrees | None = None
        self.forecast: Forecast | None = None
        if spec.kind == "anomaly":
            self.gaussian = WindowedGaussian(config.detectors, spec.direction)
            self.trees = HalfSpaceTrees(config.detectors, spec.direction)
        else:
            self.forecast = Forecast(config.forecast_window_samples, config.detectors.min_samples)
        self.debounce: dict[DetectorName, Debounce] = {
            name: Debounce(
                config.confirm_samples, config.calm_samples, config.confirm_window_samples
            )
            for name in ("windowed_gaussian", "half_space_trees", "forecast")
        }


class Watch:
    """Every watched series' detectors; `observe` a sample, get the alerts
    that start or end with it."""

    def __init__(self, config: WatchConfig) -> None:
        self._config = config
        self._tracked: dict[tuple[str, Labels], _Tracked] = {}

    def observe(self, spec: SeriesSpec, labels: Labels, t_s: float, value: float) -> list[Finding]:
        if not math.isfinite(value):
            return []
        key = (spec.name, labels)
        tracked = self._tracked.get(key)
        if tracked is None:
            if len(self._tracked) >= self._config.max_series:
                return []
            tracked = self._tracked[key] = _Tracked(spec, self._config)
        findings: list[Finding] = []

        def judge(
            detector: DetectorName,
            anomalous: bool,
            score: float | None = None,
            forecast_s: float | None = None,
        ) -> None:
            change = tracked.debounce[detector].update(anomalous)
            if change is not None:
                state: Literal["firing", "resolved"] = "firing" if change == "fire" else "resolved"
                findings.append(
                    Finding(state, detector, spec.name, labels, t_s, value, score, forecast_s)
                )

        if tracked.gaussian is not None and tracked.trees is not None:
            mean = tracked.gaussian.mean()
            moved = mean is not None and _moved(
                value - mean, spec.direction, spec.least_change(mean)
            )
            score = tracked.gaussian.update(value)
            judge("windowed_gaussian", moved and tracked.gaussian.is_anomalous(score), score=score)
            score = tracked.trees.update(value)
            judge("half_space_trees", moved and tracked.trees.is_anomalous(score), score=score)
        if tracked.forecast is not None:
            seconds = tracked.forecast.update(t_s, value)
            soon = seconds is not None and seconds < self._config.forecast_horizon_s
            judge("forecast", soon, forecast_s=seconds)
        return findings
