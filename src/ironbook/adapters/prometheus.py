"""Prometheus and Alertmanager as local child processes: their command
lines (for the monitoring stack of `ironbook up` and for the self-contained
pair below), a wait for every scrape target to be up, and a pair in a
directory of their own on free loopback ports for `ironbook bench detect`
and the tests of `ironbook watch`. The binaries are Debian's (`prometheus`,
`prometheus-alertmanager`; `make monitoring-tools` installs them). Their
configuration files are written as JSON, which YAML reads as it is.
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ironbook.adapters.nats.localproc import LOOPBACK, ManagedProcess, PortLease, wait_until

_READY_TIMEOUT_MS = 30_000
_HTTP_TIMEOUT_S = 2.0
_MAX_ERROR_BYTES = 64 * 1024


class MonitoringBinaryMissing(RuntimeError):
    """prometheus or alertmanager is not installed."""


def binary(*names: str) -> str:
    """The first of `names` on PATH."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    raise MonitoringBinaryMissing(
        f"none of {', '.join(names)} is installed (make monitoring-tools)"
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class AlertmanagerError(RuntimeError):
    """Alertmanager refused the alerts, or did not answer."""


def rfc3339(unix_s: float) -> str:
    """A Unix time as Alertmanager's API writes times (UTC, `Z`)."""
    return datetime.datetime.fromtimestamp(unix_s, datetime.UTC).isoformat().replace("+00:00", "Z")


def post_alerts(
    alertmanager_url: str, alerts: Sequence[Mapping[str, Any]], timeout_s: float = _HTTP_TIMEOUT_S
) -> None:
    """`POST /api/v2/alerts`: each alert is `labels`, `annotations`,
    `startsAt` and `endsAt` (it fires until `endsAt` unless posted again).
    Raises AlertmanagerError when it is refused or Alertmanager cannot be reached."""
    url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
    request = urllib.request.Request(url, data=json.dumps(list(alerts)).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read(_MAX_ERROR_BYTES)
    except urllib.error.HTTPError as err:
        body = err.read(_MAX_ERROR_BYTES)
        raise AlertmanagerError(f"POST {url}: HTTP {err.code}: {body[:200]!r}") from err
    except (urllib.error.URLError, OSError) as err:
        raise AlertmanagerError(f"POST {url}: {err}") from err


class TargetsNotUp(TimeoutError):
    """Prometheus's targets were not all up within the wait."""


def active_targets(url: str) -> list[dict[str, Any]]:
    """Prometheus's active targets (`GET /api/v1/targets`), [] if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=_HTTP_TIMEOUT_S) as response:
            targets: list[dict[str, Any]] = json.load(response)["data"]["activeTargets"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []
    return targets


def wait_targets_up(
    url: str, jobs: set[str], *, timeout_s: float, settle_s: float = 0.0
) -> list[dict[str, Any]]:
    """Once Prometheus at `url` has a target of every job in `jobs` and all
    its targets are up, and still all up `settle_s` later (so every series
    has samples before anything is judged on its changes): the targets.
    Raises TargetsNotUp, naming the ones down, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    up_since: float | None = None
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        targets = active_targets(url)
        all_up = {t["labels"]["job"] for t in targets} >= jobs and all(
            t["health"] == "up" for t in targets
        )
        if not all_up:
            up_since = None
        elif up_since is None:
            up_since = time.monotonic()
        if up_since is not None and time.monotonic() - up_since >= settle_s:
            return targets
        time.sleep(0.5)
    down = [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
    raise TargetsNotUp(f"Prometheus targets not all up within {timeout_s} s: {down}")


def prometheus_process(
    config: Path,
    data_dir: Path,
    address: str,
    log_path: Path,
    *,
    retention: str | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """Prometheus on `address` (host:port) with `config`, its TSDB in `data_dir`."""
    return ManagedProcess(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir}",
            *([f"--storage.tsdb.retention.time={retention}"] if retention else []),
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        log_path=log_path,
        env=env,
    )


def alertmanager_process(
    config: Path,
    data_dir: Path,
    address: str,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """Alertmanager on `address` (host:port) with `config`, alone: no gossip
    with peers (it would otherwise listen on 0.0.0.0:9094)."""
    return ManagedProcess(
        "alertmanager",
        [
            binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={config}",
            f"--storage.path={data_dir}",
            f"--web.listen-address={address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        log_path=log_path,
        env=env,
    )


class LocalAlertmanager:
    """An Alertmanager that routes everything to a receiver with no
    integrations: alerts are kept and shown by its API, never sent on."""

    def __init__(self, directory: Path, config: Mapping[str, object] | None = None) -> None:
        """`config`: Alertmanager's configuration, by default one route to
        a receiver that sends nothing."""
        self._dir = directory
        self._ports = PortLease()
        (self.port,) = self._ports.take(1)
        self.url = f"http://{LOOPBACK}:{self.port}"
        config_path = self._dir / "alertmanager.yml"
        self._dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(
            json.dumps(
                config
                or {
                    "route": {"receiver": "kept", "group_wait": "1s", "group_interval": "1s"},
                    "receivers": [{"name": "kept"}],
                }
            )
        )
        self._process = alertmanager_process(
            config_path,
            self._dir / "data",
            f"{LOOPBACK}:{self.port}",
            self._dir / "alertmanager.log",
        )

    def start(self) -> None:
        self._process.start()
        wait_until(
            "alertmanager ready",
            lambda: _ready(f"{self.url}/-/ready"),
            timeout_ms=_READY_TIMEOUT_MS,
            interval_ms=100,
        )

    def alerts(self) -> list[dict[str, object]]:
        """The active alerts (`GET /api/v2/alerts`)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=_HTTP_TIMEOUT_S) as r:
            answer: list[dict[str, object]] = json.load(r)
        return answer

    def close(self) -> None:
        self._process.stop()
        self._ports.release()


class LocalPrometheus:
    """A Prometheus scraping `targets` (job → host:port list) every
    `scrape_interval_s`, with `rule_files` loaded."""

    def __init__(
        self,
        directory: Path,
        targets: Mapping[str, Sequence[str]],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
    ) -> None:
        self._dir = directory
        self._ports = PortLease()
        (self.port,) = self._ports.take(1)
        self.url = f"http://{LOOPBACK}:{self.port}"
        interval = f"{int(scrape_interval_s * 1000)}ms"
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": interval,
                        "scrape_timeout": interval,
                        "evaluation_interval": interval,
                    },
                    "rule_files": [str(path) for path in rule_files],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                        for job, hosts in targets.items()
                    ],
                }
            )
        )
        self._process = prometheus_process(
            config, self._dir / "data", f"{LOOPBACK}:{self.port}", self._dir / "prometheus.log"
        )

    def start(self) -> None:
        self._process.start()
        wait_until(
            "prometheus ready",
            lambda: _ready(f"{self.url}/-/ready"),
            timeout_ms=_READY_TIMEOUT_MS,
            interval_ms=100,
        )

    def close(self) -> None:
        self._process.stop()
        self._ports.release()
