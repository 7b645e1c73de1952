"""`ironbook up` builds the local cluster from the settings, and every child
process is started through the composition root with the same settings
file; each child's flags parse back to the settings the cluster meant."""

from __future__ import annotations

import argparse
from pathlib import Path

from ironbook.bootstrap import build_local_cluster, build_parser, settings_from
from ironbook.settings import FeedSettings, load_settings


def _child_settings(argv: list[str]) -> argparse.Namespace:
    assert argv[1:4] == ["-m", "ironbook.bootstrap", argv[3]]
    return build_parser().parse_args(argv[3:])


def test_up_starts_every_process_through_the_root_with_its_settings(tmp_path: Path) -> None:
    config = tmp_path / "ironbook.toml"
    config.write_text('[gateway]\nprincipal_burst = 9\n\n[feed]\nrate = 7\nproducer = "book1"\n')
    settings = load_settings(
        config,
        {
            "cluster": {"data_dir": tmp_path / "data", "partitions": 2, "serve_http": True},
            "gateway": {"port": 18080},
        },
    )
    cluster = build_local_cluster(settings, config_file=config)
    processes = {**cluster.replicas, **cluster.gateways, **cluster.feeds}
    assert set(processes) == {
        "p0-r1", "p0-r2", "p0-r3", "p1-r1", "p1-r2", "p1-r3",
        "gw-1", "gw-2", "history-p0", "history-p1",
        "feed-sim", "feed-ingest", "feed-settle",
    }  # fmt: skip
    for name, process in processes.items():
        child = settings_from(_child_settings(process.argv))
        assert child.nats.url == cluster.nats_url, name
        assert child.gateway.principal_burst == 9, f"{name} reads the same file"
    replica = settings_from(_child_settings(cluster.replicas["p1-r2"].argv)).replica
    assert (replica.node_id, replica.partition) == ("p1-r2", 1)
    worker = settings_from(_child_settings(cluster.gateways["gw-2"].argv))
    assert (worker.gateway.port, worker.gateway.worker_count) == (18080, 2)
    assert worker.cluster.partitions == 2
    feed = settings_from(_child_settings(cluster.feeds["feed-sim"].argv)).feed
    assert (feed.rate, feed.producer) == (7, "book1")


def test_no_gateway_and_no_feed_unless_asked(tmp_path: Path) -> None:
    settings = load_settings(None, {"cluster": {"data_dir": tmp_path}, "feed": {"source": "none"}})
    cluster = build_local_cluster(settings)
    assert cluster.gateways == {} and cluster.feeds == {}
    assert "--config" not in cluster.replicas["p0-r1"].argv


def test_a_second_feed_runs_as_the_clusters_own_children(tmp_path: Path) -> None:
    """A feed for another producer (the odds benchmark makes one per phase)
    gets the cluster's settings file and environment: its security mode and,
    when secured, where its identity's credentials are."""
    config = tmp_path / "ironbook.toml"
    config.write_text("[feed]\nrate = 7\n")
    for secure in (True, False):
        data_dir = tmp_path / f"data-{secure}"
        overrides = {"cluster": {"data_dir": data_dir}, "nats": {"secure": secure}}
        cluster = build_local_cluster(load_settings(config, overrides), config_file=config)
        assert cluster.child_env["IRONBOOK_NATS_SECURE"] == ("true" if secure else "false")
        extra = cluster.feed_processes(FeedSettings(source="sim", producer="other", rate=3))
        assert set(extra) == {"feed-sim", "feed-ingest", "feed-settle"}
        for name, process in extra.items():
            child = settings_from(_child_settings(process.argv))
            assert child.feed.producer == "other", name
            assert process.env == cluster.child_env, name


def test_every_child_runs_in_the_clusters_security_mode(tmp_path: Path) -> None:
    """Each supervised child of a plaintext cluster connects in plaintext and
    each of a secured one with its identity: none falls back to the default
    (secured) and looks for credentials the cluster never made."""
    for secure in (True, False):
        settings = load_settings(
            None,
            {
                "cluster": {"data_dir": tmp_path / f"data-{secure}", "serve_http": True},
                "nats": {"secure": secure},
            },
        )
        cluster = build_local_cluster(settings)
        children = {name: child.process for name, child in cluster.supervisor.children.items()}
        assert {"audit-verifier", "audit-events", "gw-1", "feed-ingest", "p0-r1"} <= set(children)
        for name, process in children.items():
            if name.startswith("nats-"):
                continue  # the servers themselves
            assert process.env.get("IRONBOOK_NATS_SECURE") == ("true" if secure else "false"), name
