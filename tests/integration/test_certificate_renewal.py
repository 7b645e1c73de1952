"""A cluster's certificates near their expiry are issued again by the
cluster's own CA when asked (`LocalCluster.renew_certificates`, which
`rolling_restart` calls before its first restart), and the supervisor's
`/metrics` shows the new expiry at the next scrape."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from ironbook.adapters.nats import security
from ironbook.adapters.nats.security import RENEW_BEFORE_DAYS, certificate_expiries
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.service_metrics import CertificateMetrics


def test_certificates_near_expiry_are_renewed_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", partitions=1)
    assert cluster.secrets is not None
    layout = cluster.secrets
    metrics = CertificateMetrics(layout)
    asyncio.run(metrics.sample())
    before = certificate_expiries(layout)
    assert {"ca", "gateway", "replica", "nats-n1"} <= set(before)

    # The gateway's and one server's certificates have 10 days left.
    with monkeypatch.context() as patch:
        patch.setattr(security, "CERT_VALIDITY_DAYS", 10)
        security._issue(layout, "gateway", [])
        security._issue(layout, "nats-n1", ["127.0.0.1", "localhost"])
    near = certificate_expiries(layout)
    horizon = datetime.datetime.now(datetime.UTC).timestamp() + RENEW_BEFORE_DAYS * 86400
    assert near["gateway"] < horizon and near["nats-n1"] < horizon
    assert _reported(metrics)["gateway"] == near["gateway"]

    cluster.renew_certificates()
    after = certificate_expiries(layout)
    assert after["gateway"] > horizon and after["nats-n1"] > horizon
    assert after["replica"] == before["replica"]  # far from expiry: kept
    assert after["ca"] == before["ca"]
    assert _reported(metrics)["gateway"] == after["gateway"]


def _reported(metrics: CertificateMetrics) -> dict[str, float]:
    """What the next scrape would show: certificate → expiry."""
    asyncio.run(metrics.sample())
    return {
        sample.labels["certificate"]: sample.value
        for family in metrics.collect()
        for sample in family.samples
    }
