"""The watch's bookkeeping without Prometheus: each label set is its own
series, a forecast alert fires with its forecast and resolves, alerts take
Alertmanager's v2 form with their evidence, and a dry run prints them."""

from __future__ import annotations

import asyncio
import json

import pytest

from ironbook.bootstrap import build_parser
from ironbook.services.detect import DetectorConfig, SeriesSpec, Watch, WatchConfig
from ironbook.services.watch import PrintedFindings, alert_of, watched_series
from ironbook.settings import WatchSettings

DISK = SeriesSpec("disk_free_bytes", "forecast", "down", "free bytes of a filesystem")
CONFIG = WatchConfig(
    detectors=DetectorConfig(min_samples=5), confirm_samples=2, calm_samples=3,
    forecast_window_samples=10, forecast_horizon_s=100.0,
)  # fmt: skip


def test_a_filling_disk_fires_with_its_forecast_and_resolves_when_it_stops() -> None:
    watch = Watch(CONFIG)
    other = (("mountpoint", "/other"),)
    data = (("mountpoint", "/data"),)
    findings = []
    for t in range(40):
        # /data loses 10 bytes a second from 1000 until t=20, then is freed.
        free = 1000.0 - 10 * t if t < 20 else 900.0
        findings += watch.observe(DISK, data, float(t), free)
        findings += watch.observe(DISK, other, float(t), 5e9)
    assert [(f.state, f.labels) for f in findings] == [("firing", data), ("resolved", data)]
    firing = findings[0]
    # 1000 - 10 t reaches 0 at t = 100: a forecast under the 100 s horizon
    # once t > 0, confirmed on the second such sample (t = 5, after 5 samples).
    assert firing.at_s == 5.0
    assert firing.forecast_s == pytest.approx(95.0)


def test_an_alert_carries_its_evidence() -> None:
    watch = Watch(CONFIG)
    finding = next(
        f for t in range(20) for f in watch.observe(DISK, (("instance", "n1"),), t, 200.0 - 10 * t)
    )
    alert = alert_of(finding, DISK, now_s=1_000.0)
    assert alert["labels"] == {
        "instance": "n1",
        "alertname": "IronbookWatchExhaustion",
        "severity": "page",
        "series": "disk_free_bytes",
        "detector": "forecast",
    }
    assert alert["annotations"]["series"] == "disk_free_bytes"
    assert float(alert["annotations"]["forecast_s"]) == pytest.approx(15.0)
    assert "runs out in" in alert["annotations"]["summary"]
    assert alert["startsAt"] == "1970-01-01T00:00:05Z"
    assert alert["endsAt"] > alert["startsAt"]


def test_a_dry_run_prints_one_json_line_per_alert(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(PrintedFindings().send([{"labels": {"alertname": "A"}}, {"labels": {}}]))
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["labels"] for line in lines] == [{"alertname": "A"}, {}]


def test_the_limits_reach_the_queries_and_every_series_is_named_once() -> None:
    queries = watched_series(WatchSettings(replica_memory_limit_bytes=12345))
    names = [q.spec.name for q in queries]
    assert len(names) == len(set(names))
    memory = next(q for q in queries if q.spec.name == "replica_memory_headroom_bytes")
    assert memory.promql.startswith("12345 - ")
    assert {q.spec.kind for q in queries} == {"anomaly", "forecast"}


def test_watch_is_a_process_kind_of_the_composition_root() -> None:
    args = build_parser().parse_args(["watch", "--prometheus-url", "http://p:9090"])
    assert args.kind == "watch"
    assert vars(args)["watch.prometheus_url"] == "http://p:9090"
