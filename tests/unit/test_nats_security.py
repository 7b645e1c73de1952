"""The NATS trust material: the layout contract, private modes, operator-
supplied certificates, refusals; and the command families."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path
from typing import get_args

import pytest
from cryptography import x509

from ironbook import core
from ironbook.adapters.nats import security
from ironbook.adapters.nats.security import (
    RENEW_BEFORE_DAYS,
    NatsCredentials,
    SecretsError,
    SecretsLayout,
    certificate_expiries,
    not_after,
    provide_secrets,
    public_nkey,
)
from ironbook.replication.families import FAMILIES, FAMILY_OF
from ironbook.services.nats_identities import (
    COMMAND_SENDERS,
    IDENTITY_NAMES,
    PROCESS_IDENTITY,
    identities,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_layout_is_made_private_and_complete(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path / "secrets")
    keys = provide_secrets(layout, identities=["gateway", "ops"], servers={"n1": ["10.0.0.1"]})
    assert sorted(keys) == ["gateway", "ops"]
    assert all(key.startswith("U") for key in keys.values())
    expected = [
        layout.ca_cert,
        layout.ca_key,
        layout.cert("gateway"),
        layout.key("gateway"),
        layout.cert("nats-n1"),
        layout.key("nats-n1"),
        layout.seed("gateway"),
        layout.seed("ops"),
    ]
    assert layout.ca_cert == tmp_path / "secrets" / "tls" / "ca.pem"
    assert layout.seed("ops") == tmp_path / "secrets" / "nats" / "ops.nk"
    for path in expected:
        assert _mode(path) == 0o600, path
    for directory in (layout.root, layout.tls_dir, layout.nkeys_dir):
        assert _mode(directory) == 0o700, directory
    server = x509.load_pem_x509_certificate(layout.cert("nats-n1").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "10.0.0.1",
        "127.0.0.1",
    }
    # A second run keeps everything (same keys), and the credentials load.
    assert (
        provide_secrets(layout, identities=["gateway", "ops"], servers={"n1": ["10.0.0.1"]}) == keys
    )
    credentials = NatsCredentials.load(layout.root, "gateway")
    assert public_nkey(credentials.seed_file) == keys["gateway"]
    assert isinstance(credentials.ssl_context(), ssl.SSLContext)


def test_a_node_on_a_new_address_gets_a_new_certificate(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path)
    provide_secrets(layout, identities=[], servers={"n1": ["10.0.0.1"]})
    before = layout.cert("nats-n1").read_bytes()
    provide_secrets(layout, identities=[], servers={"n1": ["10.0.0.2"]})
    assert layout.cert("nats-n1").read_bytes() != before


def test_operator_supplied_tls_is_used_as_is_and_never_completed(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path)
    provide_secrets(layout, identities=["gateway"], servers={"n1": ["127.0.0.1"]})
    layout.ca_key.unlink()  # the operator keeps their CA's key elsewhere
    cert = layout.cert("gateway").read_bytes()
    provide_secrets(layout, identities=["gateway"], servers={"n1": ["127.0.0.1"]})
    assert layout.cert("gateway").read_bytes() == cert
    with pytest.raises(SecretsError, match=r"projector-cert\.pem"):
        provide_secrets(layout, identities=["gateway", "projector"], servers={})


def test_every_certificate_has_its_expiry(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path)
    provide_secrets(layout, identities=["gateway"], servers={"n1": ["127.0.0.1"]})
    (layout.tls_dir / "junk-cert.pem").write_text("not a certificate")
    expiries = certificate_expiries(layout)
    assert sorted(expiries) == ["ca", "gateway", "nats-n1"]
    now = datetime.datetime.now(datetime.UTC).timestamp()
    assert expiries["ca"] > expiries["gateway"] > now + 800 * 86400
    assert expiries["gateway"] == not_after(layout.cert("gateway")).timestamp()


def test_a_certificate_near_its_expiry_is_issued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = SecretsLayout(tmp_path)
    servers = {"n1": ["127.0.0.1"]}
    with monkeypatch.context() as patch:
        patch.setattr(security, "CERT_VALIDITY_DAYS", RENEW_BEFORE_DAYS - 1)
        keys = provide_secrets(layout, identities=["gateway"], servers=servers)
    near = certificate_expiries(layout)
    assert provide_secrets(layout, identities=["gateway"], servers=servers) == keys
    renewed = certificate_expiries(layout)
    assert renewed["ca"] == near["ca"]
    for name in ("gateway", "nats-n1"):
        assert renewed[name] - near[name] > 700 * 86400, name
    # Still signed by the same CA: every link keeps trusting it.
    assert isinstance(NatsCredentials.load(layout.root, "gateway").ssl_context(), ssl.SSLContext)


def test_without_the_ca_key_a_certificate_near_its_expiry_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = SecretsLayout(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(security, "CERT_VALIDITY_DAYS", 2)
        provide_secrets(layout, identities=["gateway"], servers={})
    layout.ca_key.unlink()  # an operator's CA: renewing is the operator's job
    cert = layout.cert("gateway").read_bytes()
    provide_secrets(layout, identities=["gateway"], servers={})
    assert layout.cert("gateway").read_bytes() == cert


def test_secrets_others_can_read_are_refused(tmp_path: Path) -> None:
    layout = SecretsLayout(tmp_path)
    provide_secrets(layout, identities=["gateway"], servers={})
    layout.key("gateway").chmod(0o640)
    with pytest.raises(SecretsError, match=r"gateway-key\.pem: mode 0640"):
        NatsCredentials.load(layout.root, "gateway")
    layout.key("gateway").chmod(0o600)
    layout.seed("gateway").chmod(0o604)
    with pytest.raises(SecretsError, match=r"gateway\.nk"):
        provide_secrets(layout, identities=["gateway"], servers={})


def test_every_command_has_one_family_and_every_family_is_used() -> None:
    kinds = {*get_args(core.AnyCommand), *get_args(core.AnyQuery)}
    assert set(FAMILY_OF) == kinds
    assert set(FAMILY_OF.values()) == set(FAMILIES)
    assert FAMILY_OF[core.Deposit] == "wallet"
    assert FAMILY_OF[core.AdjustBalance] == "wallet"
    assert FAMILY_OF[core.PlaceBet] == "betting"
    assert FAMILY_OF[core.FeedBatch] == "market"
    assert FAMILY_OF[core.GetFeedCursor] == "query"


def test_every_process_has_an_identity_and_only_ops_administers_streams() -> None:
    assert set(PROCESS_IDENTITY.values()) <= set(IDENTITY_NAMES)
    for name, permissions in identities(2, ["sim"]).items():
        admin = [
            subject
            for subject in permissions.publish
            if subject.startswith("$JS.API.STREAM.")
            and subject.split(".")[3] in ("CREATE", "UPDATE", "DELETE", "PURGE")
            and not subject.startswith("$JS.API.STREAM.PURGE.OBJ_ironbook_snapshots_")
        ]
        assert admin == [], (name, admin)
        assert (">" in permissions.publish) == (name == "ops"), name
    assert "ingest" in IDENTITY_NAMES
    assert not any("wallet" in s for s in identities(1, ["sim"])["ingest"].publish)


def test_replicas_may_answer_every_identity_that_may_send_them_commands() -> None:
    every = identities(2)
    senders = {
        name
        for name, permissions in every.items()
        if any(
            subject.startswith("ironbook.cmdbatch.") or subject == ">"
            for subject in permissions.publish
        )
    }
    assert set(COMMAND_SENDERS) == senders
    replica = every["replica"].publish
    assert all(f"_INBOX.{sender}.>" in replica for sender in senders)
    assert "_INBOX.projector.>" not in replica
