"""What the ops console shows of the cluster, read from Prometheus's HTTP API
(`/api/v1/query`): every scrape target, the replicas' roles and lag, bets/s and
append p99 per partition, the NATS servers, the supervisor's recent restarts
and the error budgets left. One `read()` runs the queries concurrently, each
bounded by `QUERY_TIMEOUT_S`."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ironbook.services.process import all_of

QUERY_TIMEOUT_S = 2.0
BETS = 'ironbook_replica_commands_total{kind="place_bet",outcome="accepted"}'
BET_REQUESTS = 'ironbook_http_requests_total{method="POST",route="/v1/bets"}'
BET_ERRORS = 'ironbook_http_requests_total{method="POST",route="/v1/bets",status=~"5.."}'
BETS_FAST = 'ironbook_http_request_seconds_bucket{route="/v1/bets",le="0.25"}'
BET_TIMES = 'ironbook_http_request_seconds_count{route="/v1/bets"}'
QUERIES = {
    "up": "up",
    "role": "ironbook_replica_role == 1",
    "lag": "ironbook_replica_lag_entries",
    "bets_per_s": f"sum by (partition) (rate({BETS}[10s]))",
    "append_p99_s": (
        "histogram_quantile(0.99, sum by (partition, le) "
        "(rate(ironbook_replica_append_seconds_bucket[30s])))"
    ),
    "nats": "ironbook_nats_server_reachable",
    "restarts": "increase(ironbook_supervisor_restarts_total[15m]) > 0",
    "availability_budget_left": (
        f"1 - (sum(increase({BET_ERRORS}[30d])) / sum(increase({BET_REQUESTS}[30d]))) / 0.001"
    ),
    "latency_budget_left": (
        f"1 - (1 - sum(increase({BETS_FAST}[30d])) / sum(increase({BET_TIMES}[30d]))) / 0.01"
    ),
}


class PrometheusUnavailable(RuntimeError):
    pass


def _query(base_url: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as err:
        raise PrometheusUnavailable(f"{base_url}: {err}") from err
    if body.get("status") != "success":
        raise PrometheusUnavailable(f"{expr}: {body.get('error')}")
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def _value(sample: dict[str, Any]) -> float | None:
    value = float(sample["value"][1])
    return None if math.isnan(value) else value  # NaN: no data in the window


async def read_cluster(prometheus_url: str) -> dict[str, Any]:
    """The console's view of the cluster now."""
    names = list(QUERIES)
    results = await all_of(
        *(asyncio.to_thread(_query, prometheus_url, QUERIES[name]) for name in names)
    )
    found = dict(zip(names, results, strict=True))
    replicas: dict[str, dict[str, Any]] = {}
    targets = []
    for sample in found["up"]:
        labels = sample["metric"]
        targets.append(
            {
                "job": labels.get("job", ""),
                "instance": labels.get("instance", ""),
                "name": labels.get("name", labels.get("instance", "")),
                "up": _value(sample) == 1,
            }
        )
        if labels.get("job") == "ironbook-replica":
            replicas[labels["name"]] = {
                "name": labels["name"],
                "partition": labels.get("partition", ""),
                "node": labels.get("node", ""),
                "up": _value(sample) == 1,
                "role": "unknown",
                "lag": None,
            }
    for sample in found["role"]:
        replica = replicas.get(sample["metric"].get("name", ""))
        if replica is not None:
            replica["role"] = sample["metric"].get("role", "unknown")
    for sample in found["lag"]:
        replica = replicas.get(sample["metric"].get("name", ""))
        if replica is not None:
            replica["lag"] = _value(sample)
    partitions: dict[str, dict[str, Any]] = {}
    for replica in replicas.values():
        partition = partitions.setdefault(
            replica["partition"],
            {
                "partition": replica["partition"],
                "leader": None,
                "bets_per_s": None,
                "append_p99_ms": None,
            },
        )
        if replica["role"] == "leader" and replica["up"]:
            partition["leader"] = replica["name"]
    for sample in found["bets_per_s"]:
        row = partitions.get(sample["metric"].get("partition", ""))
        if row is not None:
            row["bets_per_s"] = _value(sample)
    for sample in found["append_p99_s"]:
        row = partitions.get(sample["metric"].get("partition", ""))
        seconds = _value(sample)
        if row is not None and seconds is not None:
            row["append_p99_ms"] = seconds * 1000
    nats = [
        {
            "name": s["metric"].get("name", s["metric"].get("server", "")),
            "server": s["metric"].get("server", ""),
            "node": s["metric"].get("node", ""),
            "up": _value(s) == 1,
        }
        for s in found["nats"]
    ]
    restarts = [
        {"child": s["metric"].get("child", ""), "restarts_15m": _value(s)}
        for s in found["restarts"]
    ]
    budgets = {
        name: _value(found[name][0]) if found[name] else None
        for name in ("availability_budget_left", "latency_budget_left")
    }
    return {
        "replicas": sorted(replicas.values(), key=lambda r: r["name"]),
        "partitions": sorted(partitions.values(), key=lambda p: p["partition"]),
        "nats": sorted(nats, key=lambda n: n["name"]),
        "targets": sorted(targets, key=lambda t: (t["job"], t["name"])),
        "restarts": sorted(restarts, key=lambda r: r["child"]),
        "slo": budgets,
    }
