"""`ironbook watch`: online anomaly detection and exhaustion forecasts over
what an operator's Prometheus holds, findings sent to Alertmanager.

Every `interval_ms` each query of `watched_series` is sent to Prometheus's
HTTP API (`/api/v1/query`); every label set it answers with is one series,
fed to the detectors of `services.detect` with Prometheus's own timestamp.
A finding (an alert firing or resolving) is posted to Alertmanager
(`/api/v2/alerts`), and every firing alert is posted again every
`_RESEND_S` so that Alertmanager keeps it (each post says it ends
`_ENDS_AFTER_S` later unless renewed, so an alert whose series vanished, or
whose watcher died, expires by itself). A dry run prints each finding as a
JSON line instead. docs/watch.md lists the series and explains the detectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ironbook.adapters.prometheus import AlertmanagerError, post_alerts, rfc3339
from ironbook.replication.concurrency import wait_for
from ironbook.services.detect import (
    DetectorConfig,
    Direction,
    Finding,
    Labels,
    SeriesSpec,
    Watch,
    WatchConfig,
)
from ironbook.services.nats_exporter import http_get
from ironbook.services.process import all_of
from ironbook.settings import WatchSettings

log = logging.getLogger("ironbook.watch")

_RESEND_S = 30.0
_ENDS_AFTER_S = 3 * _RESEND_S
_RATE_RANGE = "15s"
_MIB = 1024 * 1024
BETS_PER_S_CHANGE_RATIO = 0.25
"""Bets per second move this share of their baseline before it counts: an
outage or a surge does; the ±20 % a closed loop of bettors swings by with
the machine's load does not."""
REPLICA_STALLED_RATIO = 0.06
"""A replica whose loop stood still off the CPU this much more of the time
than the least stalled replica's is stalling: a stop of 0.6 s in 10 s. A
busy host starves every replica alike; a busy loop is on the CPU."""
_STALLED = 'ironbook_replica_loop_stalled_seconds_total{job="ironbook-replica"}'
_DISK_FSTYPES = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs|proc|sysfs"'


@dataclass(frozen=True, slots=True)
class WatchedQuery:
    spec: SeriesSpec
    promql: str


def watched_series(settings: WatchSettings) -> tuple[WatchedQuery, ...]:
    """The queries watched. Anomaly series are scored by both detectors;
    forecast series are headrooms (what is left before exhaustion)."""
    r = _RATE_RANGE

    def anomaly(
        name: str,
        direction: Direction,
        summary: str,
        promql: str,
        min_change: float,
        min_change_ratio: float = 0.0,
    ) -> WatchedQuery:
        return WatchedQuery(
            SeriesSpec(name, "anomaly", direction, summary, min_change, min_change_ratio), promql
        )

    def forecast(name: str, summary: str, promql: str) -> WatchedQuery:
        return WatchedQuery(SeriesSpec(name, "forecast", "down", summary), promql)

    return (
        anomaly(
            "bets_per_s",
            "both",
            "bets placed per second, against its recent baseline",
            f'sum(rate(ironbook_replica_commands_total{{kind="place_bet"}}[{r}]))',
            min_change=5.0,
            min_change_ratio=BETS_PER_S_CHANGE_RATIO,
        ),
        anomaly(
            "bet_latency_p99_s",
            "up",
            "99th percentile of bet placement latency at the gateway",
            "histogram_quantile(0.99, sum by (le) "
            f'(rate(ironbook_http_request_seconds_bucket{{route="/v1/bets"}}[{r}])))',
            min_change=0.05,
        ),
        anomaly(
            "append_latency_p99_s",
            "up",
            "99th percentile of a batch's append (replicated and fsynced) by partition",
            "histogram_quantile(0.99, sum by (le, partition) "
            f"(rate(ironbook_replica_append_seconds_bucket[{r}])))",
            min_change=0.1,
        ),
        anomaly(
            "replica_lag_entries",
            "up",
            "log entries a replica has not applied",
            "ironbook_replica_lag_entries",
            min_change=50.0,
        ),
        anomaly(
            "bet_error_ratio",
            "up",
            "share of bet placements answered 5xx",
            f'sum(rate(ironbook_http_requests_total{{route="/v1/bets",status=~"5.."}}[{r}]))'
            f' / sum(rate(ironbook_http_requests_total{{route="/v1/bets"}}[{r}]))',
            min_change=0.01,
        ),
        anomaly(
            "refusal_ratio",
            "up",
            "share of ledger commands not accepted, by partition",
            "sum by (partition) "
            f'(rate(ironbook_replica_commands_total{{outcome!="accepted"}}[{r}]))'
            f" / sum by (partition) (rate(ironbook_replica_commands_total[{r}]))",
            min_change=0.02,
        ),
        anomaly(
            "host_cpu_busy_ratio",
            "up",
            "share of the host's CPU time not idle",
            f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{r}]))',
            min_change=0.15,
        ),
        anomaly(
            "host_memory_available_bytes",
            "down",
            "memory the host can still hand out",
            "node_memory_MemAvailable_bytes",
            min_change=256 * _MIB,
        ),
        anomaly(
            "replica_memory_bytes",
            "up",
            "resident memory of a replica process",
            'process_resident_memory_bytes{job="ironbook-replica"}',
            min_change=32 * _MIB,
        ),
        anomaly(
            "scrape_up",
            "down",
            "1 while an ironbook process answers its scrape (0: dead, hung or cut off)",
            'up{job=~"ironbook-.*"}',
            min_change=0.5,
        ),
        anomaly(
            "replica_loop_stalled_ratio",
            "up",
            "share of the last 10 s a replica's event loop stood still off the CPU "
            "(stopped or starved), beyond the least stalled replica's",
            f"rate({_STALLED}[10s]) - scalar(min(rate({_STALLED}[10s])))",
            min_change=REPLICA_STALLED_RATIO,
        ),
        anomaly(
            "nats_server_reachable",
            "down",
            "1 while a NATS server's monitoring port answers",
            "ironbook_nats_server_reachable",
            min_change=0.5,
        ),
        anomaly(
            "nats_server_response_s",
            "up",
            "time for a NATS server's monitoring endpoints to answer (a starved or slow server)",
            "ironbook_nats_server_response_seconds",
            min_change=0.05,
        ),
        anomaly(
            "nats_server_stalled_ratio",
            "up",
            "share of a NATS server's probes answered late against the quickest server "
            "(stopped or starved of CPU)",
            "ironbook_nats_server_stalled_ratio",
            min_change=0.06,
        ),
        anomaly(
            "nats_stream_replicas_lagging",
            "up",
            "stream replicas a NATS server sees behind or gone (Raft health)",
            "sum by (server) (ironbook_nats_stream_replicas_lagging)",
            min_change=1.0,
        ),
        forecast(
            "disk_free_bytes",
            "free bytes of a filesystem",
            f"node_filesystem_avail_bytes{{{_DISK_FSTYPES}}}",
        ),
        forecast(
            "jetstream_storage_free_bytes",
            "JetStream file storage left under max_file_store",
            "ironbook_nats_jetstream_storage_reserved_bytes"
            " - ironbook_nats_jetstream_storage_used_bytes",
        ),
        forecast(
            "replica_memory_headroom_bytes",
            "resident memory a replica may still take",
            f"{settings.replica_memory_limit_bytes}"
            ' - process_resident_memory_bytes{job="ironbook-replica"}',
        ),
        forecast(
            "state_size_headroom_bytes",
            "growth a partition's snapshot may still take",
            f"{settings.state_size_limit_bytes} - ironbook_replica_snapshot_bytes",
        ),
    )


def watch_config(settings: WatchSettings) -> WatchConfig:
    return WatchConfig(
        detectors=DetectorConfig(
            window_samples=settings.window_samples,
            min_samples=settings.min_samples,
            gap_samples=settings.gap_samples,
            gaussian_threshold=settings.gaussian_threshold,
            trees_threshold=settings.trees_threshold,
        ),
        confirm_samples=settings.confirm_samples,
        confirm_window_samples=settings.confirm_window_samples,
        calm_samples=settings.calm_samples,
        forecast_window_samples=settings.forecast_window_samples,
        forecast_horizon_s=settings.forecast_horizon_s,
    )


class WatchError(Exception):
    """Prometheus or Alertmanager answered with an error, or not at all."""


Sample = tuple[Labels, float, float]
"""(labels, unix time in seconds, value) of one series."""


class Prometheus:
    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s

    async def query(self, promql: str) -> list[Sample]:
        """An instant query's vector (or scalar) as samples. Every query of
        a round is in flight at once, each on its own connection."""
        url = f"{self._url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = await http_get(url, self._timeout_s)
        if status == 0:
            raise WatchError(
                f"query {promql!r}: unreachable, or no answer within {self._timeout_s} s"
            )
        if status != 200:
            raise WatchError(f"query {promql!r}: HTTP {status}: {body[:200]!r}")
        data = json.loads(body)["data"]
        if data["resultType"] == "scalar":
            t, value = data["result"]
            return [((), float(t), float(value))]
        return [
            (
                tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__")),
                float(item["value"][0]),
                float(item["value"][1]),
            )
            for item in data["result"]
        ]


def alert_of(
    finding: Finding, spec: SeriesSpec, now_s: float, started_s: float | None = None
) -> dict[str, Any]:
    """Alertmanager's v2 form of a finding: firing until renewed, or resolved
    now (`started_s`: when it fired)."""
    forecasting = finding.detector == "forecast"
    labels = {
        **dict(finding.labels),
        "alertname": "IronbookWatchExhaustion" if forecasting else "IronbookWatchAnomaly",
        "severity": "page" if forecasting else "ticket",
        "series": finding.series,
        "detector": finding.detector,
    }
    evidence = {"series": finding.series, "value": _number(finding.value)}
    if finding.score is not None:
        evidence["score"] = _number(finding.score)
    if finding.forecast_s is not None:
        evidence["forecast_s"] = _number(finding.forecast_s)
    where = ", ".join(f"{k}={v}" for k, v in finding.labels) or "cluster"
    if forecasting:
        summary = f"{spec.summary} ({where}): runs out in {evidence.get('forecast_s')} s"
    else:
        summary = f"{spec.summary} ({where}): {finding.detector} score {evidence.get('score')}"
    starts = finding.at_s if started_s is None else started_s
    ends = max(now_s, starts) if finding.state == "resolved" else max(now_s, starts) + _ENDS_AFTER_S
    return {
        "labels": labels,
        "annotations": {"summary": summary, **{k: str(v) for k, v in evidence.items()}},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }


def _number(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else value


class FindingSink(Protocol):
    async def send(self, alerts: Sequence[dict[str, Any]]) -> None: ...


class Alertmanager:
    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(post_alerts, self._url, alerts, self._timeout_s)
        except AlertmanagerError as err:
            raise WatchError(f"alertmanager: {err}") from err


class PrintedFindings:
    """The dry run: each alert as one JSON line on stdout."""

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        for alert in alerts:
            print(json.dumps(alert, sort_keys=True), file=sys.stdout, flush=True)


class Watcher:
    """One round at a time: query every series, feed the detectors, send
    what changed (and, every `_RESEND_S`, every alert still firing)."""

    def __init__(
        self,
        queries: Sequence[WatchedQuery],
        config: WatchConfig,
        prometheus: Prometheus,
        sink: FindingSink,
        *,
        on_finding: Callable[[Finding], None] | None = None,
        resend: bool = True,
    ) -> None:
        self._queries = list(queries)
        self._watch = Watch(config)
        self._prometheus = prometheus
        self._sink = sink
        self._on_finding = on_finding
        self._resend = resend
        self._firing: dict[tuple[Any, ...], tuple[Finding, SeriesSpec]] = {}
        self._last_resend_s = 0.0
        self.rounds = 0
        """Rounds done (each series' samples scored)."""

    async def round(self, now_s: float) -> list[Finding]:
        """One round of queries; the findings it made. A query that fails is
        skipped this round (its series keeps its history); one line says how
        many failed and why the first did."""
        answers = await all_of(*(self._ask(query.promql) for query in self._queries))
        failed = [answer for answer in answers if isinstance(answer, Exception)]
        if failed:
            log.warning("%d of %d queries skipped: %s", len(failed), len(answers), failed[0])
        # Scoring is CPU-bound (a new series builds its trees: seconds for a
        # first round of every series on a loaded machine): in a thread, so
        # that the loop it shares (`ironbook up`'s supervisor) keeps turning.
        findings = await asyncio.to_thread(self._observe, answers)
        self.rounds += 1
        alerts = []
        for finding, spec in findings:
            started_s = None
            if finding.state == "firing":
                self._firing[finding.key] = (finding, spec)
            else:
                fired = self._firing.pop(finding.key, None)
                started_s = None if fired is None else fired[0].at_s
            if self._on_finding is not None:
                self._on_finding(finding)
            alerts.append(alert_of(finding, spec, now_s, started_s))
        if self._resend and now_s - self._last_resend_s >= _RESEND_S:
            self._last_resend_s = now_s
            fresh = {f.key for f, _ in findings}
            alerts += [
                alert_of(f, spec, now_s)
                for key, (f, spec) in self._firing.items()
                if key not in fresh
            ]
        if alerts:
            await self._sink.send(alerts)
        return [finding for finding, _ in findings]

    def _observe(
        self, answers: Sequence[list[Sample] | Exception]
    ) -> list[tuple[Finding, SeriesSpec]]:
        findings: list[tuple[Finding, SeriesSpec]] = []
        for query, samples in zip(self._queries, answers, strict=True):
            if isinstance(samples, Exception):
                continue
            for labels, t_s, value in samples:
                for finding in self._watch.observe(query.spec, labels, t_s, value):
                    findings.append((finding, query.spec))
        return findings

    async def _ask(self, promql: str) -> list[Sample] | Exception:
        try:
            return await self._prometheus.query(promql)
        except (WatchError, ValueError, KeyError) as err:
            return err


async def run(
    watcher: Watcher, interval_s: float, stop: asyncio.Event, clock: Callable[[], float] = time.time
) -> None:
    """Rounds every `interval_s` until `stop`; a sink that fails is logged
    and the round's alerts are sent again with the next resend."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            await watcher.round(clock())
        except WatchError as err:
            log.warning("could not send findings: %s", err)
        await _sleep_or_stop(stop, interval_s - (time.monotonic() - started))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), seconds)


def build(settings: WatchSettings, on_finding: Callable[[Finding], None] | None = None) -> Watcher:
    """The watcher `settings` describe: Alertmanager, or printed lines in a
    dry run; each finding is also passed to `on_finding` (the remediation)."""
    timeout_s = settings.query_timeout_ms / 1000
    sink: FindingSink = (
        PrintedFindings()
        if settings.dry_run
        else Alertmanager(settings.alertmanager_url, timeout_s)
    )
    return Watcher(
        watched_series(settings),
        watch_config(settings),
        Prometheus(settings.prometheus_url, timeout_s),
        sink,
        on_finding=on_finding,
    )
