"""The one typed settings object every ironbook process is built from.

Each value comes from, lowest precedence first: its default (which runs the
local cluster), a TOML file (`--config FILE`), an `IRONBOOK_<SECTION>_<FIELD>`
environment variable (`IRONBOOK_GATEWAY_PORT=8081`), and a command-line flag.
Sections are per process kind; docs/configuration.md lists every field.
"""

from __future__ import annotations

import contextvars
import ipaddress
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "IRONBOOK_"
DAY_MS = 86_400_000
DEFAULT_DATA_DIR = Path(".ironbook")
Producer = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
CidrList = Annotated[tuple[str, ...], NoDecode]
"""From the environment as a comma-separated list (`10.0.0.0/8, 192.0.2.0/24`)."""
ReplicaMutation = Literal["none", "reply_before_ack"]
StringList = Annotated[tuple[str, ...], NoDecode]
"""From the environment as a comma-separated list."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"
    """`auto`: readable lines when stderr is a terminal, JSON lines otherwise."""


class NatsSettings(Section):
    url: str = "nats://127.0.0.1:4222"
    """Server URLs, comma-separated; credentials in a URL are masked in `config show`."""
    replicas: int = Field(default=3, ge=1, le=5)
    """Replication factor of the streams, buckets and object stores `ops` provisions."""
    secure: bool = True
    """Mutual TLS and one nkey identity per service (docs/security.md). `false`
    only to measure what security costs: the servers then take anyone, in
    plaintext."""
    secrets_dir: Path | None = None
    """The CA, certificates and nkey seeds (docs/security.md layout);
    default `<cluster.data_dir>/secrets`. Put your own there to use them."""


class ClusterSettings(Section):
    data_dir: Path = DEFAULT_DATA_DIR
    partitions: int | None = Field(default=None, ge=1, le=1_024)
    """Ledger partitions. `ironbook up`: for a new data directory (default 1);
    an existing one keeps its own. Other processes: the cluster's count."""
    serve_http: bool = False
    """`ironbook up` also runs `gateway_workers` gateway workers on `gateway.port`."""
    gateway_workers: int = Field(default=2, ge=1, le=64)

    @property
    def partition_count(self) -> int:
        return self.partitions or 1


class SupervisorSettings(Section):
    """How `ironbook up` supervises its processes (`services.supervisor`)."""

    hung_after_ms: int = Field(default=5_000, ge=1_000, le=600_000)
    startup_grace_ms: int = Field(default=20_000, ge=1_000, le=600_000)
    crash_loop_restarts: int = Field(default=5, ge=1, le=1_000)
    crash_loop_window_ms: int = Field(default=60_000, ge=1_000, le=86_400_000)
    max_remediations_per_minute: int = Field(default=6, ge=1, le=1_000)
    dry_run: bool = False


class ReplicaSettings(Section):
    node_id: str = Field(default="p0-r1", min_length=1, max_length=64)
    partition: int = Field(default=0, ge=0)
    metrics_host: str = "127.0.0.1"
    """Where `/metrics` listens: loopback, or the cluster's private network."""
    metrics_port: int = Field(default=0, ge=0, le=65_535)
    """0: a free port, announced in the replica's heartbeat."""
    test_mutation: ReplicaMutation = "none"
    """TEST-ONLY. `reply_before_ack`: the leader answers before its batch is
    durable, so chaos runs show the history checker catching lost
    acknowledged writes. Never set it anywhere else."""
    result_slice_bets: int = Field(default=1_000, ge=1, le=100_000)
    """Bets a market result walks per log entry, for a new ledger (an existing
    ledger keeps the size in its state)."""
    resettle_window_ms: int = Field(default=7 * DAY_MS, ge=1)
    """How long after its latest result a market may be resulted again
    (resettled, rolled back, voided), for a new ledger."""
    bet_retention_ms: int = Field(default=14 * DAY_MS, ge=2)
    """How long after its latest result a market and its bets stay in the
    replicas' state before they are archived, for a new ledger; longer than
    `resettle_window_ms`."""

    @model_validator(mode="after")
    def _retention_outlasts_the_resettle_window(self) -> ReplicaSettings:
        if self.bet_retention_ms <= self.resettle_window_ms:
            raise ValueError(
                f"replica.bet_retention_ms ({self.bet_retention_ms}) must be longer than "
                f"replica.resettle_window_ms ({self.resettle_window_ms}): a market may be "
                "resulted again only while its bets are still in the state"
            )
        return self


class GatewaySettings(Section):
    """One gateway worker. Rate limits are for the whole host: it runs as
    `worker_count` workers behind one port (SO_REUSEPORT) that share no state,
    so each worker enforces its share, the configured rate and burst divided
    by `worker_count` (burst at least 1). The kernel spreads connections, not
    requests, evenly over the workers, so a client on one keep-alive
    connection gets one worker's share: the limits err on the strict side,
    never N times too loose."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    worker_id: str = Field(default="w0", min_length=1, max_length=64)
    worker_count: int = Field(default=1, ge=1, le=256)
    """Workers sharing this host's port (`ironbook up` sets it to `cluster.gateway_workers`)."""

    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    """HS256 with the local keys in the data directory, or RS256 / ES256
    with the public keys in `jwt_keys_dir`."""
    jwt_keys_dir: Path | None = None
    """The verification keys, one file per key id (`kid`): `<kid>.pem` public
    keys for RS256 / ES256; for HS256 default `<data_dir>/gateway/jwt-keys`
    (`<kid>.hs256` and `current`, managed by `ironbook token rotate-key`)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    bettor_token_max_lifetime_s: int = Field(default=86_400, ge=60, le=86_400)
    """The longest `exp - iat` accepted for a bettor token, whatever `exp` says."""
    staff_token_max_lifetime_s: int = Field(default=3_600, ge=60, le=3_600)
    """The same for trader, cashier, admin and auditor tokens."""

    principal_rate_per_s: float = Field(default=200.0, gt=0)
    principal_burst: int = Field(default=400, ge=1)
    ip_rate_per_s: float = Field(default=500.0, gt=0)
    ip_burst: int = Field(default=1_000, ge=1)
    max_tracked_keys: int = Field(default=100_000, ge=1)
    """Token buckets kept per worker (least recently used are dropped)."""
    max_inflight_ledger_requests: int = Field(default=2_000, ge=1)
    """Per worker; beyond it requests are shed at once with 503 `overloaded`."""
    max_inflight_bets_per_market: int = Field(default=1_000, ge=1)
    """Per worker and market: bet placements on one market beyond it are shed
    at once with 503 `market_busy`, so that a flooded market cannot take every
    slot of `max_inflight_ledger_requests` from the others."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1_024)
    request_deadline_ms: int = Field(default=10_000, ge=1)
    ledger_inflight_batches: int = Field(default=4, ge=1)
    """Batch requests per partition in flight from one worker. Under load
    every slot is busy and the requests waiting meanwhile travel together, so
    fewer slots mean bigger batches: fewer NATS messages and less work per
    bet in the gateway, NATS and the leader. At low load a request finds a
    free slot and goes at once."""
    allow_cidrs: CidrList = ()
    """Empty: every address not denied may connect."""
    deny_cidrs: CidrList = ()
    trusted_proxies: CidrList = ()
    """Proxies whose `X-Forwarded-For` is believed: the client is the
    rightmost address in it that is not one of them. Empty: the header is
    ignored."""
    limit_concurrency: int = Field(default=4_096, ge=1)
    """Connections and requests one worker serves at once; beyond it uvicorn
    answers 503 at once."""
    body_read_timeout_ms: int = Field(default=10_000, ge=100)
    """The whole request body must arrive within this (slow senders get 408)."""
    ws_max_per_ip: int = Field(default=64, ge=1)
    """Open odds WebSockets per client address, per worker."""
    ws_max_per_principal: int = Field(default=8, ge=1)
    """Open odds WebSockets per token subject, per worker."""
    metrics_host: str = "127.0.0.1"
    """Where `/metrics` listens: loopback, or the cluster's private network."""
    metrics_port: int = Field(default=9180, ge=0, le=65_535)
    """The ops port, shared by the host's workers like `port`; any worker
    answers for all of them. Not served on the public port."""
    currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$")

    @field_validator("allow_cidrs", "deny_cidrs", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("allow_cidrs", "deny_cidrs", "trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value

    @property
    def principal_rate_per_worker(self) -> tuple[float, int]:
        """(rate per second, burst) that one worker enforces per principal."""
        return self._share(self.principal_rate_per_s, self.principal_burst)

    @property
    def ip_rate_per_worker(self) -> tuple[float, int]:
        """(rate per second, burst) that one worker enforces per address."""
        return self._share(self.ip_rate_per_s, self.ip_burst)

    def _share(self, rate_per_s: float, burst: int) -> tuple[float, int]:
        return rate_per_s / self.worker_count, max(1, burst // self.worker_count)


class FeedSettings(Section):
    source: Literal["sim", "external", "none"] = "sim"
    """`sim`: the built-in simulator; `external`: something else publishes into
    the producer's feed stream (docs/feed.md); `none`: no feed at all."""
    producer: Producer = "sim"
    rate: int = Field(default=200, ge=0, le=100_000)
    """Simulated odds changes per second."""
    seed: int = 1
    down_after_ms: int = Field(default=3_000, ge=100)
    """A producer silent this long has its markets suspended."""
    football_events: int = Field(default=4, ge=0, le=1_000)
    """Simulated matches at a time (2 markets each)."""
    races: int = Field(default=3, ge=0, le=1_000)
    """Simulated races at a time (1 market each)."""
    pre_match_s: int = Field(default=60, ge=0)
    """Simulated seconds from a market's creation to its start."""
    frame_ms: int = Field(default=20, ge=1, le=1_000)
    """The simulator publishes at most once per this many ms (one frame: one
    JetStream message for all the messages due); more is cheaper for NATS and
    the ledger (fewer ingester rounds), less is fresher odds."""


class HistorySettings(Section):
    partition: int = Field(default=0, ge=0)
    db: Path | None = None
    """The SQLite read model; default `<data_dir>/history/p<partition>.sqlite`."""


class ExporterSettings(Section):
    """The NATS collector (`python -m ironbook.bootstrap nats-exporter`)."""

    nats_monitor_urls: str = "http://127.0.0.1:8222"
    """The NATS servers' monitoring ports, comma-separated."""
    host: str = "127.0.0.1"
    """Where its `/metrics` listens: loopback or the cluster's private network."""
    port: int = Field(default=0, ge=0, le=65_535)
    """0: a free port, written in the log."""
    scrape_timeout_ms: int = Field(default=800, ge=10, le=60_000)
    """How long one scrape waits for each server's monitoring port."""


class BackupSettings(Section):
    """Backups of the ledger (docs/backup.md): `ironbook backup`, `ironbook
    restore`, and the scheduled backups `ironbook up` runs."""

    to: str | None = None
    """The target: a directory (an off-site mount) or `rclone:<remote>:<path>`."""
    every_s: int = Field(default=0, ge=0)
    """`ironbook up` takes a backup this often, in seconds (0: never)."""
    keep: int = Field(default=7, ge=1, le=1_000)
    """Full chains kept (a full backup and its incrementals); older ones are deleted."""
    chain_length: int = Field(default=24, ge=1, le=10_000)
    """Backups in a chain before the next one is a full backup."""
    recipients: StringList = ()
    """age public keys (`age1...`) every backup is encrypted to; from the
    environment as a comma-separated list."""
    identity_file: Path | None = None
    """The age identity a restore decrypts with; default
    `<data_dir>/secrets/backup/identity.txt` (what `ironbook backup keygen` writes)."""

    @field_validator("recipients", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)


class WatchSettings(Section):
    """`ironbook watch`: anomaly detection and exhaustion forecasts over
    Prometheus, findings sent to Alertmanager (docs/watch.md)."""

    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    dry_run: bool = False
    """Print each finding as a JSON line instead of sending it to Alertmanager."""
    interval_ms: int = Field(default=1_000, ge=100, le=60_000)
    """How often every watched series is queried."""
    query_timeout_ms: int = Field(default=2_000, ge=10, le=60_000)
    window_samples: int = Field(default=120, ge=10, le=100_000)
    """Samples in the windowed Gaussian's window and in the trees' baseline."""
    min_samples: int = Field(default=30, ge=2, le=100_000)
    """Samples a series needs before it is scored or forecast."""
    gap_samples: int = Field(default=20, ge=0, le=100_000)
    """Latest samples left out of the trees' baseline."""
    gaussian_threshold: float = Field(default=0.9999, gt=0.5, lt=1.0)
    """Windowed-Gaussian score (1 − tail probability) that counts as anomalous."""
    trees_threshold: float = Field(default=0.97, gt=0.0, lt=1.0)
    """Half-space-trees score that counts as anomalous."""
    confirm_samples: int = Field(default=2, ge=1, le=1_000)
    """Anomalous samples among the last `confirm_window_samples` before an alert fires."""
    confirm_window_samples: int = Field(default=6, ge=1, le=1_000)
    """The samples `confirm_samples` are counted in (equal: in a row)."""
    calm_samples: int = Field(default=10, ge=1, le=100_000)
    """Normal samples in a row before a firing alert resolves."""
    forecast_window_samples: int = Field(default=60, ge=2, le=100_000)
    """Samples the exhaustion forecasts fit their line to."""
    forecast_horizon_s: float = Field(default=3_600.0, gt=0)
    """A resource forecast to run out sooner than this is an alert."""
    replica_memory_limit_bytes: int = Field(default=2 * 1024**3, ge=1)
    """The resident memory a replica may use (the forecast's ceiling)."""
    state_size_limit_bytes: int = Field(default=1024**3, ge=1)
    """The snapshot size a partition's state may reach (the forecast's ceiling)."""
    remediate: bool = False
    """Act on findings (docs/watch.md, "Remediation"): with `ironbook up
    --monitoring`, `up` runs the watcher and its remediation itself."""
    remediation_dry_run: bool = False
    """Decide, log and record each action as an event, but do none."""
    remediation_cooldown_s: float = Field(default=300.0, ge=0)
    """One action per target (a replica, a NATS server) within this."""
    remediation_max_per_hour: int = Field(default=6, ge=0, le=1_000)
    """Actions in any hour, across all targets."""
    remediation_settle_s: float = Field(default=20.0, ge=0, le=3_600)
    """A replica started more recently than this is neither restarted nor
    counted towards the majority its partition must keep while another
    replica is (its scrapes are missing while it starts)."""

    @model_validator(mode="after")
    def _confirm_fits_its_window(self) -> WatchSettings:
        if self.confirm_samples > self.confirm_window_samples:
            raise ValueError("confirm_samples must not exceed confirm_window_samples")
        return self


class AuditSettings(Section):
    """Leader-signed checkpoints and the independent verifier (docs/audit.md)."""

    checkpoints: bool = True
    """Replicas keep their partition's Merkle tree and the leader signs
    checkpoints of it. Off: no tree, no checkpoints (benchmarks' baseline)."""
    checkpoint_every_ms: int = Field(default=1_000, ge=10, le=3_600_000)
    """A leader whose log grew signs at least this often..."""
    checkpoint_every_entries: int = Field(default=10_000, ge=1)
    """...and once this many entries are past the last checkpoint."""
    offsite_dir: Path | None = None
    """Every checkpoint is also appended here (fsynced); mount another
    machine's disk or sync it with rclone. Default `<data_dir>/audit` (next to
    the public key; backups record the newest checkpoint found there)."""
    pubkey_file: Path | None = None
    """The verifier checks signatures against this public key (PEM): give it
    a copy kept apart from the signers. Default `<data_dir>/audit/pubkey`."""
    verifier_host: str = "127.0.0.1"
    """Where the verifier's `/metrics` listens."""
    verifier_port: int = Field(default=0, ge=0, le=65_535)
    """0: a free port, written in the verifier's log."""
    verifier_poll_ms: int = Field(default=500, ge=10, le=60_000)
    """How often the verifier looks for new checkpoints, and the event recorder
    for new ledger entries, when idle."""


class MetricsSettings(Section):
    """`/metrics` of the feed processes, the settlement service, the history
    projector and `ironbook up` (the supervisor)."""

    host: str = "127.0.0.1"
    """Loopback, or the cluster's private network."""
    port: int = Field(default=0, ge=0, le=65_535)
    """0: a free port, written in the log."""


class MonitoringSettings(Section):
    """The monitoring stack `ironbook up --monitoring` runs (docs/alerting.md)."""

    enabled: bool = False
    """Run Prometheus, Alertmanager, node_exporter, the NATS collector and
    the alert receiver with its console next to the cluster."""
    host: str = "127.0.0.1"
    """Where every monitoring port listens: loopback or a private network."""
    scrape_interval_ms: int = Field(default=1_000, ge=250, le=60_000)
    """How often Prometheus scrapes the ledger's own processes and
    evaluates the rules."""
    node_scrape_interval_ms: int = Field(default=5_000, ge=250, le=300_000)
    """How often it scrapes node_exporter (host metrics change slowly)."""
    retention: str = Field(default="2d", pattern=r"^[0-9]+[smhdwy]$")
    """How long Prometheus keeps samples."""
    prometheus_port: int = Field(default=0, ge=0, le=65_535)
    alertmanager_port: int = Field(default=0, ge=0, le=65_535)
    node_exporter_port: int = Field(default=0, ge=0, le=65_535)
    ops_port: int = Field(default=0, ge=0, le=65_535)
    """The alert receiver and ops console. Every port: 0 picks a free one."""


class OpsSettings(Section):
    """The alert receiver and ops console process
    (`python -m ironbook.bootstrap alert-receiver`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65_535)
    """0: a free port, written in the log."""
    prometheus_url: str = "http://127.0.0.1:9090"
    """The Prometheus the console queries."""
    alertmanager_url: str = "http://127.0.0.1:9093"
    alerts_file: Path | None = None
    """JSON lines, one per alert notification; default
    `<data_dir>/monitoring/alerts.jsonl`."""


class DrSettings(Section):
    """A DR site (docs/dr.md): `ironbook up --dr-site` and the WAN relay."""

    enabled: bool = False
    """`ironbook up` runs a DR layout, as `mode` says."""
    mode: Literal["mirror", "stretch"] = "mirror"
    """mirror: also run site B, its own NATS cluster mirroring site A's
    streams over a leafnode link through the WAN relay (`--dr-site`).
    stretch: one NATS cluster over three sites, one replica of every stream
    per site, every route through the WAN relay (RPO 0)."""
    wan_rtt_ms: int = Field(default=30, ge=0, le=10_000)
    """The round-trip time the relay adds between the sites."""
    relay_routes: str = ""
    """The relay's routes, `listen_host:port=target_host:port,...` (`ironbook
    up` sets them)."""


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "ironbook_config_file", default=None
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
    )

    log: LogSettings = LogSettings()
    nats: NatsSettings = NatsSettings()
    cluster: ClusterSettings = ClusterSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    replica: ReplicaSettings = ReplicaSettings()
    gateway: GatewaySettings = GatewaySettings()
    feed: FeedSettings = FeedSettings()
    history: HistorySettings = HistorySettings()
    exporter: ExporterSettings = ExporterSettings()
    backup: BackupSettings = BackupSettings()
    watch: WatchSettings = WatchSettings()
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    ops: OpsSettings = OpsSettings()
    dr: DrSettings = DrSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        config_file = _config_file.get()
        if config_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=config_file),)
        return sources

    @model_validator(mode="after")
    def _a_dr_site_needs_identities(self) -> Settings:
        if self.dr.enabled and not self.nats.secure and self.dr.mode == "mirror":
            raise ValueError(
                "dr.enabled (--dr-site) needs nats.secure = true: site A is fenced after a "
                "promotion by denying its identities the ledger's subjects, and a plaintext "
                "cluster has no identities to deny"
            )
        if self.dr.enabled and not self.nats.secure:
            raise ValueError(
                "dr.mode = stretch (--dr-mode stretch) needs nats.secure = true: its routes "
                "carry every ledger append between sites, and they run mutual TLS only on a "
                "secured cluster"
            )
        return self

    @property
    def nats_secrets_dir(self) -> Path:
        return self.nats.secrets_dir or self.cluster.data_dir / "secrets"

    @property
    def history_db(self) -> Path:
        return self.history.db or (
            self.cluster.data_dir / "history" / f"p{self.history.partition}.sqlite"
        )

    @property
    def audit_offsite_dir(self) -> Path:
        return self.audit.offsite_dir or self.cluster.data_dir / "audit"

    @property
    def audit_pubkey_file(self) -> Path:
        return self.audit.pubkey_file or self.cluster.data_dir / "audit" / "pubkey"

    @property
    def alerts_file(self) -> Path:
        return self.ops.alerts_file or (self.cluster.data_dir / "monitoring" / "alerts.jsonl")

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-able data, with credentials replaced by `***`."""
        data = self.model_dump(mode="json")
        data["nats"]["url"] = ",".join(_mask_url(url) for url in self.nats.url.split(","))
        return data


class ConfigError(ValueError):
    """A settings source (file, environment, flag) holds a value that is not valid."""


def load_settings(
    config_file: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Defaults < `config_file` < `IRONBOOK_*` environment < `overrides`
    (the command line's flags, by section; a flag not given is left out)."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"no config file {config_file}")
    token = _config_file.set(config_file)
    try:
        sections: dict[str, Any] = {}
        for section, values in (overrides or {}).items():
            given = {name: value for name, value in values.items() if value is not None}
            if given:
                sections[section] = given
        return Settings(**sections)
    except ValidationError as err:
        raise ConfigError(
            "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']} "
                f"(got {error['input']!r})"
                for error in err.errors()
            )
        ) from err
    except ValueError as err:
        raise ConfigError(str(err)) from err
    finally:
        _config_file.reset(token)


def _mask_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.password is None and parts.username is None:
        return url.strip()
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))
