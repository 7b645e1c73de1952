"""The composition root: every ironbook process is assembled here, from one
`Settings` object, and nowhere else.

    python -m ironbook.bootstrap KIND [--config FILE] [flags]

KIND is one of `replica`, `gateway`, `history`, `feed-sim`, `feed-ingest`,
`feed-settle`, `nats-exporter`, `backup`, `watch`, `audit-verifier`,
`audit-events`, `alert-receiver`, `wan-relay` (a DR site's link); `ironbook
up` (the supervisor of a local cluster) starts them this way, after
`provision` (one-shot, as `ops`) has created the streams. Each kind connects
to NATS as its own identity (`services/nats_identities.py`). Each process:
settings (defaults < TOML file < `IRONBOOK_*` environment < flags), logging
set up once (`ironbook.logs`), its adapters (NATS log, lease, snapshot store,
ledger client, ...) built and passed to the service through its constructor,
then run until SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from ironbook import core
from ironbook.adapters import wan_relay
from ironbook.adapters.audit.checkpoint_stream import NatsCheckpointPort
from ironbook.adapters.audit.events import EventOutbox, NoteEvent
from ironbook.adapters.audit.keys import (
    load_or_create_signing_key,
    public_key_pem,
    signing_key_path,
)
from ironbook.adapters.audit.trail import NatsAuditTrail
from ironbook.adapters.backup.backup import BackupSummary, FoldMemory, Progress, take_backup
from ironbook.adapters.backup.keys import parse_recipients
from ironbook.adapters.backup.target import TargetError, open_target
from ironbook.adapters.clock import SystemClock
from ironbook.adapters.feed.nats_stream import NatsFeedStream
from ironbook.adapters.feed.simulator import SimulatorConfig
from ironbook.adapters.forked_snapshots import ForkedSnapshotWriter
from ironbook.adapters.ledger_keys import PartitionSigner, ledger_signing_key, ledger_verifier
from ironbook.adapters.nats.lease import NatsLease
from ironbook.adapters.nats.log import NatsLog
from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.adapters.nats.security import NatsCredentials
from ironbook.adapters.nats.snapshots import NatsSnapshotStore, encode_object
from ironbook.adapters.nats.transport import NatsRequestServer
from ironbook.client import BatchConfig, ClientConfig, LedgerClient, ledger_over_nats
from ironbook.logs import setup_logging
from ironbook.replication.concurrency import wait_for
from ironbook.replication.merkle import EVENTS_LOG
from ironbook.replication.replica import Replica, ReplicaConfig
from ironbook.replication.sequencer import SequencerConfig
from ironbook.replication.tree_keeping import CheckpointPolicy
from ironbook.services import audit_events, audit_verifier, nats_exporter, remediate, watch
from ironbook.services import backup as backup_service
from ironbook.services import replica as replica_service
from ironbook.services.feed import ingest, provider, settlement
from ironbook.services.gateway import history
from ironbook.services.gateway.app import create_app
from ironbook.services.gateway.auth import (
    MaxLifetimes,
    TokenVerifier,
    load_verifier,
    local_keys_dir,
)
from ironbook.services.gateway.calls import watch_partitions
from ironbook.services.gateway.history import NatsHistory
from ironbook.services.gateway.idempotency import ClaimStore
from ironbook.services.gateway.metrics import GatewayMetrics
from ironbook.services.gateway.odds import OddsHub
from ironbook.services.gateway.revocation import Revocations, RevocationStore
from ironbook.services.gateway.runtime import READINESS_DEADLINE_MS, Gateway
from ironbook.services.gateway.server import serve_http
from ironbook.services.local_cluster import GatewayOptions, LocalCluster
from ironbook.services.metrics_http import serve_http as serve_metrics_http
from ironbook.services.nats_identities import PROCESS_IDENTITY
from ironbook.services.ops import server as ops_server
from ironbook.services.ops.alerts import ALERTS_SUBJECT, AlertBook, AlertRecord, encode_record
from ironbook.services.ops.cluster_view import read_cluster
from ironbook.services.ops.console import Console
from ironbook.services.ops.console import create_app as create_ops_app
from ironbook.services.process import run_service
from ironbook.services.provisioning import provision
from ironbook.services.replica_metrics import ReplicaMetrics
from ironbook.services.replica_metrics import serve_metrics as serve_replica_metrics
from ironbook.services.service_metrics import (
    FeedIngestMetrics,
    FeedProviderMetrics,
    HistoryMetrics,
    Sampled,
    SettlementMetrics,
    serve_metrics,
)
from ironbook.services.supervisor import RestartPolicy
from ironbook.settings import ConfigError, Settings, load_settings

log = logging.getLogger("ironbook.bootstrap")


@dataclass(frozen=True, slots=True)
class Flag:
    """A command-line flag that sets `section.field`."""

    name: str
    section: str
    field: str
    type: Callable[[str], Any] = str
    help: str = ""


_NATS = Flag("--nats", "nats", "url", help="NATS server URLs, comma-separated")
_REPLICAS = Flag("--replicas", "nats", "replicas", int, "JetStream replication factor")
_PARTITIONS = Flag("--partitions", "cluster", "partitions", int, "ledger partitions")
_DATA_DIR = Flag("--data-dir", "cluster", "data_dir", Path, "the cluster's data directory")
_PRODUCER = Flag("--producer", "feed", "producer", help="the feed producer")
_METRICS_PORT = Flag("--metrics-port", "metrics", "port", int, "/metrics port (0: a free one)")

PROCESS_FLAGS: dict[str, tuple[Flag, ...]] = {
    "replica": (
        _NATS,
        _REPLICAS,
        Flag("--partition", "replica", "partition", int, "ledger partition"),
        Flag("--node-id", "replica", "node_id", help="this replica's unique name"),
        _DATA_DIR,
        Flag("--metrics-host", "replica", "metrics_host", help="/metrics address"),
        Flag("--metrics-port", "replica", "metrics_port", int, "/metrics port (0: a free one)"),
        Flag("--test-mutation", "replica", "test_mutation", help="TEST-ONLY: reply_before_ack"),
    ),
    "gateway": (
        _NATS,
        Flag("--nats-replicas", "nats", "replicas", int, "JetStream replication factor"),
        _PARTITIONS,
        _DATA_DIR,
        Flag("--host", "gateway", "host", help="address to serve HTTP on"),
        Flag("--port", "gateway", "port", int, "HTTP port (shared by the workers)"),
        Flag("--worker-id", "gateway", "worker_id", help="this worker's name"),
        Flag("--worker-count", "gateway", "worker_count", int, "workers sharing the port"),
        Flag("--metrics-port", "gateway", "metrics_port", int, "ops port for /metrics (shared)"),
    ),
    "history": (
        _NATS,
        Flag("--partition", "history", "partition", int, "ledger partition"),
        Flag("--db", "history", "db", Path, "the SQLite read model"),
        _DATA_DIR,
        _METRICS_PORT,
    ),
    "feed-sim": (
        _NATS,
        _REPLICAS,
        _PRODUCER,
        Flag("--seed", "feed", "seed", int, "world seed"),
        Flag("--rate", "feed", "rate", int, "odds changes per second"),
        Flag("--football", "feed", "football_events", int, "matches at a time"),
        Flag("--races", "feed", "races", int, "races at a time"),
        Flag("--pre-match-s", "feed", "pre_match_s", int, "seconds from creation to start"),
        Flag("--frame-ms", "feed", "frame_ms", int, "publish at most once per this many ms"),
        _METRICS_PORT,
    ),
    "feed-ingest": (
        _NATS,
        _REPLICAS,
        _PRODUCER,
        _PARTITIONS,
        Flag("--down-after-ms", "feed", "down_after_ms", int, "silence before markets suspend"),
        _METRICS_PORT,
    ),
    "feed-settle": (_NATS, _REPLICAS, _PRODUCER, _PARTITIONS, _METRICS_PORT),
    "alert-receiver": (
        _NATS,
        _DATA_DIR,
        Flag("--host", "ops", "host", help="address of the ops port"),
        Flag("--port", "ops", "port", int, "the ops port (0: a free one)"),
        Flag("--prometheus-url", "ops", "prometheus_url", help="the Prometheus to query"),
        Flag("--alertmanager-url", "ops", "alertmanager_url", help="the Alertmanager"),
        Flag("--alerts-file", "ops", "alerts_file", Path, "JSON lines of alerts received"),
    ),
    "backup": (
        _NATS,
        _REPLICAS,
        _PARTITIONS,
        _DATA_DIR,
        Flag("--to", "backup", "to", help="backup target: a directory or rclone:<remote>:<path>"),
        Flag("--every-s", "backup", "every_s", int, "seconds between backups"),
    ),
    "provision": (
        _NATS,
        _REPLICAS,
        _PARTITIONS,
        _PRODUCER,
        Flag("--feed", "feed", "source", help="sim, external or none (no feed stream)"),
    ),
    "nats-exporter": (
        Flag("--monitor-urls", "exporter", "nats_monitor_urls", help="NATS monitoring URLs"),
        Flag("--host", "exporter", "host", help="address to serve /metrics on"),
        Flag("--port", "exporter", "port", int, "/metrics port (0: a free one)"),
    ),
    "watch": (
        Flag("--prometheus-url", "watch", "prometheus_url", help="Prometheus to query"),
        Flag("--alertmanager-url", "watch", "alertmanager_url", help="Alertmanager to alert"),
    ),
    "audit-verifier": (
        _NATS,
        _DATA_DIR,
        Flag("--port", "audit", "verifier_port", int, "/metrics port (0: a free one)"),
    ),
    "audit-events": (_NATS, _REPLICAS, _DATA_DIR, _PARTITIONS),
    "wan-relay": (
        Flag("--routes", "dr", "relay_routes", help="listen_host:port=target_host:port,..."),
        Flag("--wan-rtt-ms", "dr", "wan_rtt_ms", int, "round-trip time to add"),
    ),
}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (IRONBOOK_* environment variables and flags override it)",
    )


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Each flag defaults to None: a flag not given leaves the setting to
    the environment, the file or the default."""
    for flag in flags:
        parser.add_argument(
            flag.name, dest=f"{flag.section}.{flag.field}", type=flag.type, help=flag.help
        )


def settings_from(
    args: argparse.Namespace, implied: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """The settings for parsed `args` (made with `add_config_argument` and
    `add_flags`), and the `implied` values the command's flags stand for."""
    overrides: dict[str, dict[str, Any]] = {
        section: dict(values) for section, values in (implied or {}).items()
    }
    for dest, value in vars(args).items():
        section, dot, field = dest.partition(".")
        if dot and value is not None:
            overrides.setdefault(section, {})[field] = value
    return load_settings(args.config, overrides)


def nats_endpoint(settings: Settings, identity: str) -> NatsEndpoint:
    """The cluster as `identity` reaches it (plaintext if `nats.secure` is off)."""
    if not settings.nats.secure:
        return NatsEndpoint(settings.nats.url)
    return NatsEndpoint(
        settings.nats.url, NatsCredentials.load(settings.nats_secrets_dir, identity)
    )


@contextlib.asynccontextmanager
async def _nats(settings: Settings, name: str, kind: str) -> AsyncIterator[NatsClient]:
    """A connection as the identity of process kind `kind`."""
    nc = await nats_endpoint(settings, PROCESS_IDENTITY[kind]).connect(name)
    try:
        yield nc
    finally:
        await close_nats(nc)


@contextlib.asynccontextmanager
async def _ledger(nc: NatsClient, settings: Settings, subject: str) -> AsyncIterator[LedgerClient]:
    """A ledger client of the feed services: its commands are from the
    `ingest` principal `subject`."""
    client = ledger_over_nats(
        nc,
        partitions=settings.cluster.partition_count,
        issuer=core.service_principal("ingest", subject),
    )
    try:
        yield client
    finally:
        await client.close()


# Replica.


def ledger_config(settings: Settings, partition: int) -> core.LedgerConfig:
    """The rules a new ledger of `partition` starts with (an existing one
    keeps those in its state)."""
    replica = settings.replica
    return core.LedgerConfig(
        partition=partition,
        result_slice_bets=replica.result_slice_bets,
        resettle_window_ms=replica.resettle_window_ms,
        bet_retention_ms=replica.bet_retention_ms,
    )


def replica_config(settings: Settings) -> ReplicaConfig:
    r = settings.replica
    return ReplicaConfig(
        lease_ttl_ms=replica_service.LEASE_TTL_MS,
        lease_renew_interval_ms=replica_service.LEASE_RENEW_INTERVAL_MS,
        lease_retry_ms=replica_service.LEASE_RETRY_MS,
        ledger=ledger_config(settings, r.partition),
        sequencer=SequencerConfig(reply_before_ack=r.test_mutation == "reply_before_ack"),
        checkpoints=CheckpointPolicy(
            every_ms=settings.audit.checkpoint_every_ms,
            every_entries=settings.audit.checkpoint_every_entries,
        ),
    )


async def checkpoint_port(
    nc: NatsClient, settings: Settings, log_name: int | str
) -> NatsCheckpointPort | None:
    """Where a leader's checkpoints of `log_name` go; None with checkpoints off.
    The signing key is made on first use; its public key is written next to
    it in `<data_dir>/audit/pubkey` and in the off-site directory."""
    if not settings.audit.checkpoints:
        return None
    data_dir = settings.cluster.data_dir
    key = load_or_create_signing_key(signing_key_path(data_dir))
    pubkey = data_dir / "audit" / "pubkey"
    pubkey.parent.mkdir(parents=True, exist_ok=True)
    pubkey.write_bytes(public_key_pem(key.public_key()))
    return NatsCheckpointPort(nc, log_name, key, settings.audit_offsite_dir)


async def serve_replica(settings: Settings, stop: asyncio.Event) -> None:
    r = settings.replica
    replicas = settings.nats.replicas
    signer = PartitionSigner(ledger_signing_key(settings.cluster.data_dir), r.partition)
    nc = await nats_endpoint(settings, PROCESS_IDENTITY["replica"]).connect(f"replica-{r.node_id}")
    try:
        metrics = ReplicaMetrics(r.partition)
        nats_log = await NatsLog.open(nc, r.partition, replicas=replicas)
        snapshots = await NatsSnapshotStore.open(nc, r.partition, replicas=replicas)
        replica = Replica(
            r.node_id,
            log=metrics.log(nats_log),
            lease=await NatsLease.open(
                nc,
                replica_service.lease_key(r.partition),
                ttl_ms=replica_service.LEASE_TTL_MS,
                replicas=replicas,
            ),
            snapshots=snapshots,
            snapshot_writer=metrics.snapshot_writer(
                ForkedSnapshotWriter(snapshots, encode=encode_object)
            ),
            server=metrics.server(NatsRequestServer(nc, r.partition)),
            clock=SystemClock(),
            rng=random.Random(),
            config=replica_config(settings),
            signer=signer,
            verifier=signer,
            on_quarantine=replica_service.report_quarantine(r.partition, r.node_id),
            checkpoints=await checkpoint_port(nc, settings, r.partition),
        )
        if r.test_mutation != "none":
            log.warning("TEST-ONLY mutation %s: acknowledged writes may be lost", r.test_mutation)
        server = await serve_replica_metrics(
            metrics,
            replica.status,
            nats_log,
            r.metrics_host,
            r.metrics_port,
            loop_blocks=replica.loop_blocks,
        )
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            metrics_url = f"http://{host}:{port}/metrics"
            await replica_service.serve(nc, replica, r.partition, stop, metrics_url=metrics_url)
    finally:
        with contextlib.suppress(Exception):
            await wait_for(nc.drain(), timeout=replica_service.SHUTDOWN_GRACE_S)


# Gateway worker.


def token_lifetimes(settings: Settings) -> MaxLifetimes:
    g = settings.gateway
    return MaxLifetimes(g.bettor_token_max_lifetime_s, g.staff_token_max_lifetime_s)


def token_verifier(settings: Settings) -> TokenVerifier:
    """The one verifier of bearer tokens: the gateway's and the ops console's."""
    g = settings.gateway
    lifetimes = token_lifetimes(settings)
    return load_verifier(
        algorithm=g.jwt_algorithm,
        keys_dir=g.jwt_keys_dir or local_keys_dir(settings.cluster.data_dir),
        issuer=g.jwt_issuer,
        audience=g.jwt_audience,
        max_lifetimes=lifetimes,
        revocations=Revocations(lifetimes.longest_s),
    )


@contextlib.asynccontextmanager
async def connected_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway worker's `Gateway`, complete: its NATS connection, ledger
    clients, Idempotency-Key store, history and odds; closed on exit."""
    g = settings.gateway
    partitions = settings.cluster.partition_count
    lifetimes = token_lifetimes(settings)
    verifier = token_verifier(settings)
    async with _nats(settings, f"ironbook-gateway-{g.worker_id}", "gateway") as nc:
        # No issuer: every command names its caller (`calls.write`, `calls.read`),
        # and one that did not would be refused by the ledger.
        ledger = ledger_over_nats(
            nc,
            partitions=partitions,
            config=ClientConfig(deadline_ms=g.request_deadline_ms),
            batching=BatchConfig(max_inflight_batches=g.ledger_inflight_batches),
        )
        probe = ledger_over_nats(
            nc,
            partitions=partitions,
            config=ClientConfig(request_timeout_ms=500, deadline_ms=READINESS_DEADLINE_MS),
            issuer=core.service_principal("ops", f"gateway:{g.worker_id}:readiness"),
        )
        try:
            yield Gateway(
                settings=g,
                partitions=partitions,
                metrics=GatewayMetrics(worker_id=g.worker_id, workers=g.worker_count),
                verifier=verifier,
                ledger=ledger,
                probe=probe,
                claims=await ClaimStore.open(nc.jetstream(), replicas=settings.nats.replicas),
                history=NatsHistory(nc),
                odds=await OddsHub.open(nc, replicas=settings.nats.replicas),
                revoker=await RevocationStore.open(
                    nc,
                    replicas=settings.nats.replicas,
                    retention_s=lifetimes.longest_s,
                ),
                audit=NatsAuditTrail(nc),
            )
        finally:
            await ledger.close()
            await probe.close()


REVOCATIONS_LOAD_TIMEOUT_S = 30.0
"""A worker serves no request before it knows every past revocation."""


async def serve_gateway(settings: Settings, stop: asyncio.Event) -> None:
    g = settings.gateway
    async with connected_gateway(settings) as gateway, asyncio.TaskGroup() as group:
        loaded = asyncio.Event()
        follower = group.create_task(gateway.follow_revocations(loaded))
        flusher = group.create_task(gateway.flush_metrics())
        watcher = group.create_task(watch_partitions(gateway))
        recorder = group.create_task(gateway.audit.record_events())
        try:
            async with asyncio.timeout(REVOCATIONS_LOAD_TIMEOUT_S):
                await loaded.wait()

            async def render() -> tuple[bytes, str]:
                return gateway.metrics.exposition()

            ops = await serve_metrics_http(render, g.metrics_host, g.metrics_port, reuse_port=True)
            async with ops:
                await serve_http(create_app(gateway), g, stop)
        finally:
            follower.cancel()
            flusher.cancel()
            watcher.cancel()
            recorder.cancel()


# History projector and the feed.


@contextlib.asynccontextmanager
async def _metrics_served(settings: Settings, *collectors: Sampled) -> AsyncIterator[None]:
    """`/metrics` of `collectors` on `settings.metrics`, while inside."""
    server = await serve_metrics(collectors, settings.metrics.host, settings.metrics.port)
    async with server:
        host, port = server.sockets[0].getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics", host, port)
        yield


async def serve_history(settings: Settings, stop: asyncio.Event) -> None:
    partition = settings.history.partition
    store = history.HistoryStore(
        settings.history_db, verifier=ledger_verifier(settings.cluster.data_dir, partition)
    )
    try:
        async with _nats(settings, f"ironbook-history-p{partition}", "history") as nc:
            metrics = HistoryMetrics(
                partition, lambda: store.position()[0], NatsLog(nc, partition).last_seq
            )
            async with _metrics_served(settings, metrics):
                await history.serve(nc, partition, store, stop)
    finally:
        store.close()


async def serve_feed_sim(settings: Settings, stop: asyncio.Event) -> None:
    f = settings.feed
    config = SimulatorConfig(
        producer=f.producer,
        seed=f.seed,
        odds_changes_per_s=f.rate,
        football_events=f.football_events,
        races=f.races,
        pre_match_s=f.pre_match_s,
    )
    metrics = FeedProviderMetrics(f.producer)
    async with (
        _nats(settings, f"feed-provider-{f.producer}", "feed-sim") as nc,
        _metrics_served(settings, metrics),
    ):
        await provider.serve(
            nc,
            config,
            replicas=settings.nats.replicas,
            stop=stop,
            frame_ms=f.frame_ms,
            counts=metrics.counts,
        )


async def serve_feed_ingest(settings: Settings, stop: asyncio.Event) -> None:
    producer = settings.feed.producer
    async with (
        _nats(settings, f"feed-ingest-{producer}", "feed-ingest") as nc,
        _ledger(nc, settings, f"feed-ingest:{producer}") as client,
    ):
        metrics = FeedIngestMetrics(producer, NatsFeedStream(nc, producer).tail_cursor)
        async with _metrics_served(settings, metrics):
            await ingest.serve(
                nc,
                client,
                producer,
                replicas=settings.nats.replicas,
                down_after_ms=settings.feed.down_after_ms,
                stop=stop,
                metrics=metrics,
            )


async def serve_feed_settle(settings: Settings, stop: asyncio.Event) -> None:
    producer = settings.feed.producer
    async with (
        _nats(settings, f"feed-settlement-{producer}", "feed-settle") as nc,
        _ledger(nc, settings, f"feed-settle:{producer}") as client,
    ):
        metrics = SettlementMetrics(producer, lambda: settlement.backlog_frames(nc, producer))
        async with _metrics_served(settings, metrics):
            await settlement.serve(
                nc,
                client,
                producer,
                replicas=settings.nats.replicas,
                stop=stop,
                counts=metrics.counts,
            )


async def serve_nats_exporter(settings: Settings, stop: asyncio.Event) -> None:
    e = settings.exporter
    urls = [url.strip() for url in e.nats_monitor_urls.split(",") if url.strip()]
    exporter = nats_exporter.NatsExporter(urls, e.scrape_timeout_ms / 1000)
    await nats_exporter.serve(exporter, e.host, e.port, stop)


# Backups.


def backup_of(
    settings: Settings, *, full: bool = False, progress: Progress | None = None
) -> Callable[[], Coroutine[Any, Any, BackupSummary]]:
    """A backup of the cluster `settings` name, to `backup.to`, each time it
    is called (raises `BackupKeyError` / `TargetError` for bad settings)."""
    b = settings.backup
    if b.to is None:
        raise TargetError("no backup target: give --to (or set backup.to)")
    target = open_target(b.to)
    sealed_to = parse_recipients(b.recipients)
    memory = FoldMemory()

    async def take() -> BackupSummary:
        return await take_backup(
            [url.strip() for url in settings.nats.url.split(",")],
            settings.cluster.partition_count,
            target,
            recipients=list(b.recipients),
            sealed_to=sealed_to,
            keep=b.keep,
            chain_length=b.chain_length,
            data_dir=settings.cluster.data_dir.resolve(),
            ledger_config=lambda partition: ledger_config(settings, partition),
            replicas=settings.nats.replicas,
            full=full,
            memory=memory,
            progress=progress or (lambda _text: None),
            credentials=nats_endpoint(settings, PROCESS_IDENTITY["backup"]).credentials,
        )

    return take


async def serve_backups(settings: Settings, stop: asyncio.Event) -> None:
    await backup_service.serve(backup_of(settings), settings.backup.every_s, stop)


async def serve_watch(settings: Settings, stop: asyncio.Event) -> None:
    w = settings.watch
    target = "stdout (dry run)" if w.dry_run else w.alertmanager_url
    log.info("watching %s, findings to %s", w.prometheus_url, target)
    if w.remediate:
        log.warning(
            "watch.remediate: remediation acts on the processes of `ironbook up --monitoring`, "
            "which runs its own watcher; this one only alerts"
        )
    await watch.run(watch.build(w), w.interval_ms / 1000, stop)


def remediating_watch(
    settings: Settings, cluster: LocalCluster, note: NoteEvent
) -> tuple[watch.Watcher, remediate.Remediator]:
    """`ironbook up --monitoring` with `watch.remediate`: the watcher over the
    cluster's own Prometheus and Alertmanager, its findings passed to the
    remediation (`services.remediate`), whose actions are noted with `note`."""
    assert cluster.monitoring is not None
    w = settings.watch.model_copy(
        update={
            "prometheus_url": cluster.monitoring.prometheus_url,
            "alertmanager_url": cluster.monitoring.alertmanager_url,
        }
    )
    remediator = remediate.Remediator(
        remediate.LocalClusterActions(cluster, settle_s=w.remediation_settle_s),
        remediate.limits_of(w),
        note,
    )
    return watch.build(w, on_finding=remediator.offer), remediator


async def serve_remediating_watch(
    settings: Settings, cluster: LocalCluster, note: NoteEvent, stop: asyncio.Event
) -> None:
    watcher, remediator = remediating_watch(settings, cluster, note)
    mode = "dry run" if settings.watch.remediation_dry_run else "live"
    log.info("watching the cluster's Prometheus with remediation (%s)", mode)
    async with asyncio.TaskGroup() as group:
        group.create_task(remediator.run(stop))
        await watch.run(watcher, settings.watch.interval_ms / 1000, stop)


async def serve_audit_verifier(settings: Settings, stop: asyncio.Event) -> None:
    a = settings.audit
    async with _nats(settings, "ironbook-audit-verifier", "audit-verifier") as nc:
        await audit_verifier.serve(
            nc,
            settings.audit_pubkey_file,
            host=a.verifier_host,
            port=a.verifier_port,
            poll_ms=a.verifier_poll_ms,
            stop=stop,
        )


async def serve_audit_events(settings: Settings, stop: asyncio.Event) -> None:
    async with _nats(settings, "ironbook-audit-events", "audit-events") as nc:
        data_dir = settings.cluster.data_dir
        recorder = audit_events.EventRecorder(
            nc,
            [ledger_verifier(data_dir, p) for p in range(settings.cluster.partition_count)],
            await checkpoint_port(nc, settings, EVENTS_LOG),
            replica_config(settings).checkpoints,
        )
        await audit_events.serve(recorder, poll_ms=settings.audit.verifier_poll_ms, stop=stop)


async def serve_alert_receiver(settings: Settings, stop: asyncio.Event) -> None:
    o = settings.ops
    book = AlertBook(settings.alerts_file)
    try:
        async with _nats(settings, "ironbook-alert-receiver", "alert-receiver") as nc:

            async def publish(record: AlertRecord) -> None:
                try:
                    await nc.publish(ALERTS_SUBJECT, encode_record(record))
                except Exception as err:  # NATS down: the file still has it
                    log.warning("alert not published on %s: %r", ALERTS_SUBJECT, err)

            events = EventOutbox()
            console = Console(
                book,
                lambda: read_cluster(o.prometheus_url),
                publish,
                links={"Prometheus": o.prometheus_url, "Alertmanager": o.alertmanager_url},
                note_event=events.note,
            )
            app = create_ops_app(console, token_verifier(settings))
            async with asyncio.TaskGroup() as group:
                recording = group.create_task(events.run(nc))
                try:
                    await ops_server.serve(app, console, o.host, o.port, stop)
                finally:
                    recording.cancel()
    finally:
        book.close()


async def serve_wan_relay(settings: Settings, stop: asyncio.Event) -> None:
    d = settings.dr
    await wan_relay.serve(wan_relay.parse_routes(d.relay_routes), d.wan_rtt_ms, stop)


async def run_provision(settings: Settings, stop: asyncio.Event) -> None:
    """Create the cluster's streams as `ops`, then exit."""
    nc = await nats_endpoint(settings, "ops").connect("ironbook-provision")
    try:
        await provision(
            nc,
            partitions=settings.cluster.partition_count,
            replicas=settings.nats.replicas,
            producer=settings.feed.producer if settings.feed.source != "none" else None,
            revocation_retention_s=MaxLifetimes(
                settings.gateway.bettor_token_max_lifetime_s,
                settings.gateway.staff_token_max_lifetime_s,
            ).longest_s,
        )
    finally:
        await close_nats(nc)


_SERVE: dict[str, Callable[[Settings, asyncio.Event], Coroutine[Any, Any, Any]]] = {
    "replica": serve_replica,
    "gateway": serve_gateway,
    "history": serve_history,
    "feed-sim": serve_feed_sim,
    "feed-ingest": serve_feed_ingest,
    "feed-settle": serve_feed_settle,
    "nats-exporter": serve_nats_exporter,
    "backup": serve_backups,
    "watch": serve_watch,
    "audit-verifier": serve_audit_verifier,
    "audit-events": serve_audit_events,
    "alert-receiver": serve_alert_receiver,
    "provision": run_provision,
    "wan-relay": serve_wan_relay,
}


# The local cluster (`ironbook up`).


def build_local_cluster(settings: Settings, config_file: Path | None = None) -> LocalCluster:
    """NATS, replicas and, as `settings` say, gateway workers and the feed,
    supervised; every child process gets `config_file` too."""
    gateway = None
    if settings.cluster.serve_http:
        g = settings.gateway
        gateway = GatewayOptions(
            port=g.port,
            workers=settings.cluster.gateway_workers,
            host=g.host,
            metrics_port=g.metrics_port,
        )
    return LocalCluster(
        settings.cluster.data_dir,
        partitions=settings.cluster.partitions,
        gateway=gateway,
        feed=None if settings.feed.source == "none" else settings.feed,
        backup=settings.backup if settings.backup.every_s and settings.backup.to else None,
        config_file=config_file,
        supervision=RestartPolicy(**settings.supervisor.model_dump()),
        monitoring=settings.monitoring if settings.monitoring.enabled else None,
        secure=settings.nats.secure,
        secrets_dir=settings.nats.secrets_dir,
        dr=settings.dr if settings.dr.enabled else None,
    )


def _identity(kind: str, settings: Settings) -> tuple[str, int | None]:
    """(node id, partition) that every log line of this process names."""
    if kind == "replica":
        return settings.replica.node_id, settings.replica.partition
    if kind == "gateway":
        return settings.gateway.worker_id, None
    if kind == "history":
        return f"history-p{settings.history.partition}", settings.history.partition
    if kind in (
        "nats-exporter",
        "backup",
        "watch",
        "audit-verifier",
        "audit-events",
        "alert-receiver",
        "provision",
        "wan-relay",
    ):
        return kind, None
    return f"{kind}-{settings.feed.producer}", None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ironbook.bootstrap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, flags in PROCESS_FLAGS.items():
        sub = kinds.add_parser(kind)
        add_config_argument(sub)
        add_flags(sub, flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    node_id, partition = _identity(args.kind, settings)
    setup_logging(settings.log, process=args.kind, node_id=node_id, partition=partition)
    serve = _SERVE[args.kind]
    run_service(
        lambda stop: serve(settings, stop),
        exit_if_stuck_after_s=3 * replica_service.SHUTDOWN_GRACE_S
        if args.kind == "replica"
        else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
