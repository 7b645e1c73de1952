"""The operator files in `deploy/`: Prometheus alert rules, the sample scrape
config and the Grafana dashboard parse, and every expression in them uses only
metrics and labels the gateway exports (or the standard `up` and the blackbox
exporter's `probe_success`). `promtool check rules` runs too when installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ironbook.services.gateway.metrics import GatewayMetrics

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXTERNAL_METRICS = {"up": {"job", "instance"}, "probe_success": {"job", "instance"}}
TARGET_LABELS = {"instance", "job"}
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "and", "or",
    "unless", "on", "ignoring", "group_left", "group_right", "avg", "max", "min", "count",
    "le", "bool", "offset",
}  # fmt: skip


def _exported() -> dict[str, set[str]]:
    """Sample name -> label names, for every series the gateway can export."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = set(_family_labels(registry, family.name)) | TARGET_LABELS
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "gauge": [""],
        }[family.type]
        for suffix in suffixes:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return {**series, **EXTERNAL_METRICS}


def _family_labels(registry: CollectorRegistry, name: str) -> tuple[str, ...]:
    collector = registry._names_to_collectors[name]  # type: ignore[attr-defined]
    return tuple(collector._labelnames)


def _check_expr(expr: str, exported: dict[str, set[str]]) -> None:
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, f"unbalanced parentheses: {expr}"
    assert depth == 0, f"unbalanced parentheses: {expr}"
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    used = {
        name
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r"\{[^}]*\}", "", stripped))
        if not name.startswith("__") and name not in PROMQL_WORDS
    }
    metrics = {name for name in used if name in exported}
    unknown = used - metrics - set().union(*(exported[m] for m in metrics), PROMQL_WORDS)
    assert metrics, f"no known metric in: {expr}"
    assert not unknown, f"unknown metric or label {sorted(unknown)} in: {expr}"
    for metric, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            assert label in exported[metric], f"{metric} has no label {label!r}: {expr}"
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        labels = {label.strip() for label in grouping.split(",")}
        allowed = set().union(*(exported[m] for m in metrics))
        assert labels <= allowed, f"grouping by unknown labels {labels - allowed}: {expr}"


def test_alert_rules() -> None:
    exported = _exported()
    document = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        _check_expr(rule["expr"], exported)
    # What operators were promised: errors, overload, readiness, latency.
    assert {
        "IronbookGateway5xxRatioHigh",
        "IronbookGatewayOverloaded",
        "IronbookNoLedgerLeader",
        "IronbookGatewayLatencyP99High",
    } <= set(names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus-alerts.yml")], check=True)
    subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], check=True)


def test_scrape_config_names_the_jobs_the_rules_use() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["prometheus-alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    rules = (DEPLOY / "prometheus-alerts.yml").read_text()
    assert set(re.findall(r'job="([^"]+)"', rules)) <= jobs


def test_grafana_dashboard() -> None:
    exported = _exported()
    dashboard = json.loads((DEPLOY / "grafana-gateway-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    metrics_shown: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = re.sub(r"\$__rate_interval", "5m", target["expr"]).replace("$instance", ".*")
            _check_expr(expr, exported)
            metrics_shown |= {name for name in exported if re.search(rf"\b{name}\b", expr)}
    families = {name for name in exported if name.startswith("ironbook_")}
    shown_families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in metrics_shown}
    assert {re.sub(r"_(bucket|sum|count)$", "", name) for name in families} <= shown_families
