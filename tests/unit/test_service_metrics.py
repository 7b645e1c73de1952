"""Metrics of the feed ingester, settlement, the history projector and the
supervisor: the services count as they work, the families are built when a
real HTTP scrape arrives (with the values that need I/O read then, and left
out when that read fails), and the supervisor's restarts come from the
supervisor itself."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.security import SecretsLayout, provide_secrets
from ironbook.services.service_metrics import (
    CertificateMetrics,
    FeedIngestMetrics,
    HistoryMetrics,
    Sampled,
    SettlementMetrics,
    SupervisorMetrics,
    serve_metrics,
)
from ironbook.services.supervisor import RestartPolicy, Supervisor


async def _scrape(*collectors: Sampled) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    server = await serve_metrics(collectors, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_the_ingester_reports_staleness_and_backlog_only_while_it_leads() -> None:
    now = [100.0]
    tail = [0]

    async def tail_cursor() -> int:
        return tail[0]

    metrics = FeedIngestMetrics("sim", tail_cursor)
    producer = (("producer", "sim"),)
    standing_by = asyncio.run(_scrape(metrics))
    assert standing_by[("ironbook_feed_ingest_leading", producer)] == 0
    assert ("ironbook_feed_staleness_seconds", producer) not in standing_by

    c = metrics.counts
    c.leading, c.silent_s = True, lambda: now[0] - 88.0
    c.messages_in, c.rounds, c.read_cursor, c.applied_cursor = 40, 3, 40, 37
    tail[0] = 52
    leading = asyncio.run(_scrape(metrics))
    assert leading[("ironbook_feed_staleness_seconds", producer)] == 12.0
    assert leading[("ironbook_feed_ingested_messages_total", producer)] == 40
    assert leading[("ironbook_feed_rounds_total", producer)] == 3
    assert leading[("ironbook_feed_backlog_messages", producer)] == 12
    assert leading[("ironbook_feed_applied_cursor", producer)] == 37

    async def feed_down() -> int:
        raise TimeoutError

    metrics._tail_cursor = feed_down
    assert ("ironbook_feed_backlog_messages", producer) not in asyncio.run(_scrape(metrics))


def test_settlement_counts_results_and_reads_its_backlog() -> None:
    async def pending() -> int:
        return 4

    metrics = SettlementMetrics("sim", pending)
    metrics.counts.results.update({"BetSettlement": 5, "BetCancel": 1})
    metrics.counts.retried = 2
    scraped = asyncio.run(_scrape(metrics))
    assert scraped[("ironbook_settlement_backlog_frames", (("producer", "sim"),))] == 4
    assert (
        scraped[
            ("ironbook_settlement_results_total", (("kind", "BetSettlement"), ("producer", "sim")))
        ]
        == 5
    )
    assert scraped[("ironbook_settlement_retries_total", (("producer", "sim"),))] == 2


def test_history_lag_is_the_stream_tail_minus_the_projected_position() -> None:
    async def last_seq() -> int:
        return 130

    scraped = asyncio.run(_scrape(HistoryMetrics(2, lambda: 100, last_seq)))
    assert scraped[("ironbook_history_projected_sequence", (("partition", "2"),))] == 100
    assert scraped[("ironbook_history_lag_entries", (("partition", "2"),))] == 30


def test_supervisor_restarts_are_counted_per_child(tmp_path: Path) -> None:
    supervisor = Supervisor(RestartPolicy(initial_backoff_ms=1, check_interval_ms=10))
    process = ManagedProcess(
        "dies", [sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "dies.log"
    )
    supervisor.add("dies", process, process.start)

    async def run() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        supervisor.start_all()
        deadline = asyncio.get_running_loop().time() + 30
        while supervisor.children["dies"].restarts < 2:
            assert asyncio.get_running_loop().time() < deadline
            supervisor.check()
            await asyncio.sleep(0.02)
        return await _scrape(SupervisorMetrics(supervisor))

    scraped = asyncio.run(run())
    process.kill()
    child = (("child", "dies"),)
    assert scraped[("ironbook_supervisor_restarts_total", child)] >= 2
    assert ("ironbook_supervisor_child_up", child) in scraped
    assert scraped[("ironbook_supervisor_backoff_seconds", child)] > 0


def test_certificate_expiries_are_reported_and_follow_a_renewed_file(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path / "secrets")
    provide_secrets(layout, identities=["gateway", "replica"], servers={"n1": ["127.0.0.1"]})
    metrics = CertificateMetrics(layout)
    name = "ironbook_tls_certificate_expiry_timestamp_seconds"
    first = asyncio.run(_scrape(metrics))
    expiries = {labels[0][1]: value for (metric, labels), value in first.items() if metric == name}
    assert sorted(expiries) == ["ca", "gateway", "nats-n1", "replica"]
    layout.cert("gateway").unlink()
    layout.key("gateway").unlink()
    provide_secrets(layout, identities=["gateway", "replica"], servers={"n1": ["127.0.0.1"]})
    second = asyncio.run(_scrape(metrics))
    assert second[(name, (("certificate", "gateway"),))] >= expiries["gateway"]
    assert second[(name, (("certificate", "replica"),))] == expiries["replica"]
