"""DR site pieces that need no server: mirror configs and their promotion,
mirror lag read from `/jsz` and exported as metrics, the primary record and
its epochs, the fence in a site's nats-server config, and the link's
permissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ironbook.adapters.nats.localproc import ManagedProcess
from ironbook.adapters.nats.mirrors import (
    SUBJECTS_METADATA,
    MirrorError,
    mirror_config,
    mirror_state,
    promoted_config,
)
from ironbook.adapters.nats.security import Permissions, SecretsLayout, ServerSecurity
from ironbook.adapters.nats.server import (
    LeafRemote,
    NatsNode,
    NodePorts,
    SiteOptions,
    render_config,
)
from ironbook.services import dr
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.nats_exporter import NatsCollector, ServerView
from ironbook.settings import DrSettings

LEDGER_CONFIG = {
    "name": "LEDGER_0",
    "subjects": ["ledger.0"],
    "retention": "limits",
    "storage": "file",
    "num_replicas": 3,
    "discard": "new",
    "duplicate_window": 120_000_000_000,
    "deny_delete": True,
    "deny_purge": True,
    "allow_direct": True,
    "sealed": False,
    "metadata": {"_nats.req.level": "0", "owner": "ironbook"},
}


def test_a_mirror_keeps_the_origin_config_but_its_subjects() -> None:
    config = mirror_config(LEDGER_CONFIG, "a")
    assert "subjects" not in config
    assert config["mirror"] == {"name": "LEDGER_0", "external": {"api": "$JS.a.API", "deliver": ""}}
    assert config["num_replicas"] == 3 and config["deny_delete"] is True
    assert json.loads(config["metadata"][SUBJECTS_METADATA]) == ["ledger.0"]
    assert "_nats.req.level" not in config["metadata"]


def test_promotion_puts_the_subjects_back_and_drops_the_mirror() -> None:
    promoted = promoted_config(mirror_config(LEDGER_CONFIG, "a"))
    assert "mirror" not in promoted
    assert promoted["subjects"] == ["ledger.0"]
    assert promoted["metadata"] == {"owner": "ironbook"}
    assert {k: v for k, v in promoted.items() if k != "metadata"} == {
        k: v for k, v in LEDGER_CONFIG.items() if k != "metadata"
    }


def test_a_mirror_not_made_by_ironbook_is_not_promoted() -> None:
    with pytest.raises(MirrorError, match="not a mirror made by ironbook"):
        promoted_config({"name": "X", "mirror": {"name": "X"}})


def _jsz_stream(name: str, leader: str, mirror: dict[str, object] | None) -> dict[str, object]:
    detail: dict[str, object] = {
        "name": name,
        "state": {"messages": 10, "bytes": 1_000, "last_seq": 10},
        "cluster": {"leader": leader, "replicas": [{"name": "b2", "current": True}]},
        "config": {"name": name},
    }
    if mirror is not None:
        detail["mirror"] = mirror
    return detail


def test_mirror_state_reads_lag_and_silence() -> None:
    state = mirror_state(
        _jsz_stream("LEDGER_0", "b1", {"name": "LEDGER_0", "lag": 7, "active": 2_500_000_000})
    )
    assert (state.stream, state.last_seq, state.is_mirror) == ("LEDGER_0", 10, True)
    assert state.lag_entries == 7 and state.active_s == pytest.approx(2.5)
    never = mirror_state(
        _jsz_stream("LEDGER_0", "b1", {"name": "LEDGER_0", "lag": 0, "active": -1})
    )
    assert never.active_s is None
    plain = mirror_state(_jsz_stream("LEDGER_0", "b1", None))
    assert not plain.is_mirror and plain.lag_entries is None


def test_the_collector_exports_mirror_lag_from_the_mirrors_leader_only() -> None:
    mirror = {"name": "LEDGER_0", "lag": 3, "active": 1_000_000_000}
    views = []
    for server, name in (("127.0.0.1:1", "b1"), ("127.0.0.1:2", "b2")):
        views.append(
            ServerView(
                server=server,
                healthy=True,
                reachable=True,
                varz={"server_name": name, "cluster": {"name": "ironbook-b"}},
                jsz={
                    "account_details": [
                        {
                            "stream_detail": [
                                _jsz_stream("LEDGER_0", "b1", mirror),
                                _jsz_stream("AUDIT_EVENTS", "b1", None),
                            ]
                        }
                    ]
                },
            )
        )
    collector = NatsCollector()
    collector.views = views
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'ironbook_dr_mirror_lag_entries{stream="LEDGER_0"} 3.0' in text
    assert 'ironbook_dr_mirror_active_seconds{stream="LEDGER_0"} 1.0' in text
    assert text.count("ironbook_dr_mirror_lag_entries{") == 1
    assert 'stream="AUDIT_EVENTS"} ' not in "".join(
        line for line in text.splitlines() if line.startswith("ironbook_dr_")
    )


def test_epochs_only_grow_as_the_primary_goes_back_and_forth(tmp_path: Path) -> None:
    assert dr.read_primary(tmp_path) == dr.PrimaryRecord(site="a", epoch=1, at_ms=0, by="")
    with pytest.raises(dr.DrError, match="primary already"):
        dr.next_primary(tmp_path, "a")
    record = dr.next_primary(tmp_path, "b", "operator:test")
    assert (record.site, record.epoch, record.by) == ("b", 2, "operator:test")
    dr.write_primary(tmp_path, record)
    assert dr.read_primary(tmp_path) == record
    with pytest.raises(dr.DrError, match="primary already"):
        dr.next_primary(tmp_path, "b")
    for site, epoch in (("a", 3), ("b", 4), ("a", 5)):
        record = dr.next_primary(tmp_path, site, "operator:test")
        assert (record.site, record.epoch) == (site, epoch)
        dr.write_primary(tmp_path, record)
    assert dr.other_site("a") == "b" and dr.other_site("b") == "a"
    assert dr.export_dir(tmp_path, "a", 1) == tmp_path / "dr" / "site-a-epoch-1"


def test_every_stream_is_mirrored() -> None:
    assert dr.mirrored_streams(2, ["sim"]) == [
        "LEDGER_0",
        "LEDGER_1",
        "OBJ_ironbook_snapshots_0",
        "OBJ_ironbook_snapshots_1",
        "FEED_sim",
        "AUDIT_CHECKPOINTS",
        "AUDIT_EVENTS",
    ]


def test_the_link_carries_only_what_mirroring_needs_in_either_direction() -> None:
    permissions = dr.link_permissions(["LEDGER_0"])
    # Into site A (the hub): site B's mirrors' requests to A's API, and
    # B's streams' messages and API replies for A's mirrors.
    assert all(
        subject.startswith(("$JS.a.API.", "$JS.FC.", "$JS.M.", "$JSC.R.", "_INBOX.dr-link."))
        for subject in permissions.publish
    )
    # Out to site B: A's mirrors' requests to B's API, and A's messages
    # and API replies for B's mirrors.
    assert all(
        subject.startswith(("$JS.b.API.", "$JS.FC.", "$JS.M.", "$JSC.R.", "_INBOX.dr-link."))
        for subject in permissions.subscribe
    )
    for domain, granted in (("a", permissions.publish), ("b", permissions.subscribe)):
        assert f"$JS.{domain}.API.STREAM.INFO.LEDGER_0" in granted
        assert f"$JS.{domain}.API.CONSUMER.CREATE.LEDGER_0.>" in granted
    for subject in (*permissions.publish, *permissions.subscribe):
        assert not subject.startswith(("ledger", "audit.", "ironbook.", ">", "$JS.API."))
        assert not any(verb in subject for verb in ("STREAM.CREATE", "STREAM.UPDATE"))
        assert not any(verb in subject for verb in ("STREAM.DELETE", "STREAM.PURGE", "MSG."))
    assert not any("LEDGER_1" in subject for subject in permissions.subscribe)


def _node(tmp_path: Path, leaf: int = 0) -> NatsNode:
    return NatsNode(
        name="n1",
        ports=NodePorts(client=1, cluster=2, http=3, leaf=leaf),
        node_dir=tmp_path,
        process=ManagedProcess("n1", ["true"], log_path=tmp_path / "log"),
    )


def test_a_fenced_site_denies_every_identity_the_ledger_and_takes_the_link(
    tmp_path: Path,
) -> None:
    security = ServerSecurity(
        SecretsLayout(tmp_path),
        {"replica": ("UREPLICA", Permissions(publish=("ledger.*",), subscribe=("tip.>",)))},
    )
    site = SiteOptions(domain="a", leaf_listen=True, publish_deny=dr.FENCED_SUBJECTS)
    text = render_config(_node(tmp_path, leaf=4), "ironbook", [], security, site)
    assert 'domain: "a"' in text
    assert 'listen: "127.0.0.1:4"' in text
    denied = ", ".join(f'"{subject}"' for subject in dr.FENCED_SUBJECTS)
    assert f'publish: {{allow: ["ledger.*"], deny: [{denied}]}}' in text
    for subject in ("ledger.>", "audit.checkpoint.>", "audit.event.>", "feed.>", "$O.>"):
        assert f'"{subject}"' in text
    unfenced = render_config(
        _node(tmp_path, leaf=4), "ironbook", [], security, SiteOptions(domain="a", leaf_listen=True)
    )
    assert "deny" not in unfenced


def test_site_b_dials_the_relay(tmp_path: Path) -> None:
    remote = LeafRemote(("nats-leaf://127.0.0.1:9",))
    text = render_config(
        _node(tmp_path), "ironbook-b", [], None, SiteOptions(domain="b", leaf_remote=remote)
    )
    assert 'urls: ["nats-leaf://127.0.0.1:9"]' in text
    assert 'domain: "b"' in text


def _fenced(cluster: LocalCluster) -> dict[str, bool]:
    """Per node of both sites: does its config deny the ledger to everyone?"""
    assert cluster.site_b is not None
    return {
        node.name: 'deny: ["ledger.>", "audit.checkpoint.>"' in node.config_path.read_text()
        for site in (cluster.nats, cluster.site_b)
        for node in site.nodes.values()
    }


def test_the_site_that_is_not_primary_is_fenced_whichever_it_is(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", dr=DrSettings(enabled=True))
    try:
        for site in ("b", "a", "b"):
            record = dr.next_primary(cluster.data_dir, site, "operator:test")
            dr.write_primary(cluster.data_dir, record)
            cluster.primary = record
            assert cluster.apply_fence() == []  # nothing runs: nothing reloaded
            fenced = _fenced(cluster)
            prefix = {"a": "n", "b": "b"}[dr.other_site(site)]
            assert {name for name, denied in fenced.items() if denied} == {
                f"{prefix}{index}" for index in (1, 2, 3)
            }, (site, fenced)
        assert dr.read_primary(cluster.data_dir).epoch == 4
    finally:
        cluster.stop()
