"""One settings object: defaults < TOML file < IRONBOOK_* environment <
flags; bad values refused with the setting named; `config show` masks
credentials and prints TOML that reads back as the same settings."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from ironbook.bootstrap import build_parser, ledger_config, replica_config, settings_from
from ironbook.bootstrap import main as bootstrap_main
from ironbook.cli import main as ironbook
from ironbook.settings import ConfigError, Settings, load_settings

TOML = """
[gateway]
port = 9000
principal_burst = 5
ip_burst = 7

[nats]
url = "nats://ops:hunter2@nats-1:4222,nats://nats-2:4222"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "ironbook.toml"
    path.write_text(TOML)
    return path


def test_defaults_run_the_local_cluster() -> None:
    settings = Settings()
    assert settings.nats.url == "nats://127.0.0.1:4222"
    assert settings.cluster.data_dir == Path(".ironbook")
    assert settings.cluster.partition_count == 1
    assert settings.replica.test_mutation == "none"


def test_file_then_environment_then_flags(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRONBOOK_GATEWAY_PRINCIPAL_BURST", "6")
    monkeypatch.setenv("IRONBOOK_GATEWAY_IP_BURST", "8")
    settings = load_settings(config_file, {"gateway": {"ip_burst": 9, "host": None}})
    assert settings.gateway.port == 9000, "from the file"
    assert settings.gateway.principal_burst == 6, "the environment beats the file"
    assert settings.gateway.ip_burst == 9, "a flag beats the environment"
    assert settings.gateway.host == "127.0.0.1", "a flag not given changes nothing"


def test_process_flags_reach_their_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRONBOOK_REPLICA_PARTITION", "3")
    args = build_parser().parse_args(
        ["replica", "--node-id", "p1-r2", "--partition", "1", "--test-mutation", "reply_before_ack"]
    )
    settings = settings_from(args)
    assert (settings.replica.node_id, settings.replica.partition) == ("p1-r2", 1)
    config = replica_config(settings)
    assert config.sequencer.reply_before_ack
    assert config.ledger.partition == 1
    assert not replica_config(Settings()).sequencer.reply_before_ack


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("IRONBOOK_GATEWAY_PORT", "http", "gateway.port"),
        ("IRONBOOK_GATEWAY_WORKER_COUNT", "0", "gateway.worker_count"),
        ("IRONBOOK_FEED_PRODUCER", "no spaces", "feed.producer"),
        ("IRONBOOK_REPLICA_TEST_MUTATION", "skip_everything", "replica.test_mutation"),
        ("IRONBOOK_GATEWAY_NO_SUCH_SETTING", "1", "gateway.no_such_setting"),
        ("IRONBOOK_GATEWAY_TRUSTED_PROXIES", "10.0.0.1, proxy.internal", "gateway.trusted_proxies"),
        ("IRONBOOK_GATEWAY_STAFF_TOKEN_MAX_LIFETIME_S", "86400", "gateway.staff_token_max_"),
    ],
)
def test_bad_values_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings()


def test_a_dr_site_is_refused_on_a_plaintext_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRONBOOK_DR_ENABLED", "true")
    monkeypatch.setenv("IRONBOOK_NATS_SECURE", "false")
    with pytest.raises(ConfigError, match=r"dr\.enabled \(--dr-site\) needs nats\.secure = true"):
        load_settings()
    monkeypatch.setenv("IRONBOOK_NATS_SECURE", "true")
    assert load_settings().dr.enabled


def test_retention_must_outlast_the_resettle_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRONBOOK_REPLICA_RESETTLE_WINDOW_MS", "7200000")
    monkeypatch.setenv("IRONBOOK_REPLICA_BET_RETENTION_MS", "3600000")
    with pytest.raises(ConfigError, match=r"bet_retention_ms \(3600000\) must be longer than"):
        load_settings()
    monkeypatch.setenv("IRONBOOK_REPLICA_BET_RETENTION_MS", "10800000")
    config = ledger_config(load_settings(), partition=2)
    assert (config.resettle_window_ms, config.bet_retention_ms) == (7_200_000, 10_800_000)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_settings(tmp_path / "absent.toml")


def test_config_show_masks_credentials_and_reads_back(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ironbook(["config", "show", "--config", str(config_file), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["nats"]["url"] == "nats://***@nats-1:4222,nats://nats-2:4222"
    assert shown["gateway"]["port"] == 9000

    assert ironbook(["config", "show", "--config", str(config_file)]) == 0
    text = capsys.readouterr().out
    assert "hunter2" not in text
    reread = config_file.parent / "shown.toml"
    reread.write_text(text)
    assert tomllib.loads(text)["gateway"]["principal_burst"] == 5
    assert load_settings(reread).gateway == load_settings(config_file).gateway


def test_config_show_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gateway]\nport = -1\n")
    assert ironbook(["config", "show", "--config", str(path)]) == 2
    assert "gateway.port" in capsys.readouterr().err


def test_every_setting_is_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert model is not None
        for name in model.model_fields:
            assert f"`IRONBOOK_{section.upper()}_{name.upper()}`" in page, (section, name)


def test_a_process_with_bad_settings_is_refused_before_it_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bootstrap_main(["replica", "--nats", "nats://127.0.0.1:1", "--partition", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: replica.partition: ")
    assert "(got -1)" in err
