"""The operator files in `deploy/`: the Prometheus rules and their promtool unit
tests, the sample scrape config and the Grafana dashboard. Every alert has a
unit test that fires it, every metric the rules use is in docs/metrics.md, and
the dashboard uses only metrics and labels the gateway exports. promtool runs
`check rules`, `check config` and `test rules`; it is installed by `make` when
running as root, so there a missing promtool fails instead of skipping."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ironbook.services.gateway.metrics import GatewayMetrics

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALL_COMMAND = "sudo sh deploy/install-monitoring.sh"
EXTERNAL_METRICS = {"up": {"job", "instance"}, "probe_success": {"job", "instance"}}
TARGET_LABELS = {"instance", "job"}
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "and", "or",
    "unless", "on", "ignoring", "group_left", "group_right", "avg", "max", "min", "count",
    "le", "bool", "offset", "changes",
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


def _rules() -> list[dict[str, object]]:
    document = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _promtool_tests() -> list[Path]:
    return sorted((DEPLOY / "prometheus-tests").glob("*.yml"))


def test_alert_rules() -> None:
    rules = _rules()
    alerts = [rule for rule in rules if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    for rule in alerts:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smhd]", str(rule["for"])), rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in {"page", "ticket", "info"}
        assert annotations["summary"] and annotations["description"]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    assert all(re.fullmatch(r"ironbook:[a-z_]+:[a-z0-9_]+", str(name)) for name in recorded)
    # What operators were promised: the SLOs, the ledger, NATS, the feed,
    # settlement, the supervisor, the trust boundary and the disks.
    assert {
        "IronbookBetAvailabilityBudgetBurn",
        "IronbookBetAvailabilityBudgetLeak",
        "IronbookBetLatencyBudgetBurn",
        "IronbookBetLatencyBudgetLeak",
        "IronbookNoLedgerLeader",
        "IronbookLedgerLeaderFlapping",
        "IronbookReplicaLagging",
        "IronbookReplicaStale",
        "IronbookNatsServerDown",
        "IronbookJetStreamMetaLeaderLost",
        "IronbookFeedStale",
        "IronbookSettlementBacklog",
        "IronbookChildCrashLooping",
        "IronbookQuarantinedEntries",
        "IronbookDiskFillingUp",
        "IronbookJetStreamStorageFillingUp",
    } <= set(names)


def test_every_metric_in_the_rules_is_documented() -> None:
    documented = set(
        re.findall(r"`(ironbook_[a-z_]+)", (DEPLOY.parent / "docs" / "metrics.md").read_text())
    )
    for rule in _rules():
        expr = re.sub(r'"[^"]*"', '""', str(rule["expr"]))
        for name in re.findall(r"\bironbook_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in documented or base in documented, f"{name} is not in docs/metrics.md"


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    fired: set[str] = set()
    for path in _promtool_tests():
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../prometheus-alerts.yml"], path.name
        for test in document["tests"]:
            fired |= {case["alertname"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert {str(rule["alert"]) for rule in _rules() if "alert" in rule} <= fired


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        # The Makefile installs it when running as root (CI): there a missing
        # promtool is a failure, not a skip.
        if os.geteuid() == 0:
            pytest.fail(
                "promtool is missing although we run as root: run deploy/install-monitoring.sh"
            )
        pytest.skip(f"promtool is not installed; install it with: {INSTALL_COMMAND}")
    return promtool


def test_promtool_checks_the_rules_and_the_config() -> None:
    promtool = _promtool()
    subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus-alerts.yml")], check=True)
    subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], check=True)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = _promtool()
    tests = [path.name for path in _promtool_tests()]
    result = subprocess.run(
        [promtool, "test", "rules", *tests],
        cwd=DEPLOY / "prometheus-tests",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


def test_the_pager_route_in_the_docs_is_a_valid_alertmanager_config(tmp_path: Path) -> None:
    """docs/alerting.md's example route for a real pager is checked by amtool."""
    page = (DEPLOY.parent / "docs" / "alerting.md").read_text()
    (example,) = [block for block in re.findall(r"```yaml\n(.*?)```", page, re.S)]
    assert "pagerduty_configs" in example and "webhook_configs" in example
    amtool = shutil.which("amtool")
    if amtool is None:
        if os.geteuid() == 0:
            pytest.fail(
                "amtool is missing although we run as root: run deploy/install-monitoring.sh"
            )
        pytest.skip(f"amtool is not installed; install it with: {INSTALL_COMMAND}")
    (tmp_path / "alertmanager.yml").write_text(example)
    subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")], check=True)
