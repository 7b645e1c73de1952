"""The permission matrix of docs/security.md, cell by cell, against the live
servers of a secured local cluster; and the doors without credentials.

Each identity connects with its own certificate and nkey and tries every
probe of the table. A refused publish or subscribe comes back from the
server as an asynchronous `permissions violation` error on the connection;
the server handles a connection's messages in order, so a refused probe's
error arrives before the answer to a message sent after it (`Probe._barrier`):
no guessed sleeps, every wait bounded.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nkeys
import pytest
from nats.aio.client import Client as NatsClient

from ironbook.adapters.nats.security import NatsCredentials, SecretsLayout, provide_secrets
from ironbook.services.local_cluster import LocalCluster
from ironbook.services.nats_identities import IDENTITY_NAMES
from ironbook.settings import FeedSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
FLUSH_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
NEVER = str(2**62)
"""An expected sequence no stream reaches: an allowed append or lease write
passes the permission check and is then refused by the stream."""

_PROBE_HEADERS = {
    "ledger.0": {"Nats-Expected-Last-Sequence": NEVER},
    "feed.sim.market.frame": {"Nats-Expected-Last-Sequence": NEVER},
    "$KV.ironbook_leases.ledger-0": {"Nats-Expected-Last-Subject-Sequence": NEVER},
    "$KV.ironbook_leases.feed-ingest-sim": {"Nats-Expected-Last-Subject-Sequence": NEVER},
    "audit.checkpoint.0": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.checkpoint.events": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.leader_elected": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.auth_failure": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.audit_verify_failure": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.deposit": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.alert": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.process_restarted": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.drain": {"Nats-Expected-Last-Sequence": NEVER},
    "audit.event.config_applied": {"Nats-Expected-Last-Sequence": NEVER},
}
SENTINEL = "ironbook.permission-probe.sentinel"
"""No identity but `ops` may publish here."""
_DESTRUCTIVE = "$JS.API.STREAM.DELETE.LEDGER_0"
"""Allowed to `ops` only, and done for real: probed last."""


@dataclass(frozen=True)
class Cell:
    what: str
    verb: str
    """`pub` or `sub`."""
    subject: str
    identity: str
    allowed: bool


def matrix() -> list[Cell]:
    """The table of docs/security.md, as cells."""
    lines = DOC.read_text().splitlines()
    start = lines.index("## The permission matrix")
    header = next(line for line in lines[start:] if line.startswith("| what |"))
    identities = [name.strip() for name in header.strip("|").split("|")[2:]]
    cells = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        what, probe, *marks = (part.strip() for part in line.strip("|").split("|"))
        found = re.fullmatch(r"(pub|sub) `([^`]+)`", probe)
        assert found is not None, line
        assert len(marks) == len(identities), line
        for identity, mark in zip(identities, marks, strict=True):
            assert mark in ("✔", "✘"), line
            cells.append(Cell(what, found[1], found[2], identity, mark == "✔"))
    return cells


def test_the_matrix_covers_every_identity() -> None:
    assert sorted({cell.identity for cell in matrix()}) == sorted(IDENTITY_NAMES)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        tmp_path_factory.mktemp("secure") / "cluster",
        feed=FeedSettings(source="external", producer="sim"),
    )
    try:
        local.start()
        asyncio.run(local.wait_leaders(timeout_ms=90_000))
        yield local
    finally:
        local.stop()


class Probe:
    """One identity's connection, collecting the permission errors it gets."""

    def __init__(self, nc: NatsClient, identity: str, errors: asyncio.Queue[str]) -> None:
        self.nc = nc
        self._identity = identity
        self._errors = errors

    @classmethod
    async def connect(cls, url: str, credentials: NatsCredentials) -> Probe:
        errors: asyncio.Queue[str] = asyncio.Queue()

        async def on_error(err: Exception) -> None:
            errors.put_nowait(str(err).lower())

        nc = await nats.connect(
            servers=url.split(","),
            tls=credentials.ssl_context(),
            nkeys_seed=str(credentials.seed_file),
            inbox_prefix=f"_INBOX.{credentials.identity}",
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
        return cls(nc, credentials.identity, errors)

    async def allowed(self, cell: Cell) -> bool:
        """Try the probe, then pass a barrier the server answers only after
        the probe (nats-py may send a flush's PING ahead of queued
        messages, so a flush is no barrier): every identity but `ops` is
        refused `SENTINEL`, and the server answers in order; `ops` asks the
        JetStream API for its account info, a reply that follows the probe."""
        if cell.verb == "pub":
            await self.nc.publish(
                cell.subject, b"permission probe", headers=_PROBE_HEADERS.get(cell.subject)
            )
            subscription = None
        else:
            subscription = await self.nc.subscribe(cell.subject)
        seen = await self._barrier()
        if subscription is not None:
            await subscription.unsubscribe()
        return f'"{cell.subject.lower()}"' not in seen

    async def _barrier(self) -> str:
        """The errors that came before the barrier, in one string."""
        if self._identity == "ops":
            await self.nc.request("$JS.API.INFO", b"", timeout=FLUSH_TIMEOUT_S)
            seen = []
            while not self._errors.empty():
                seen.append(self._errors.get_nowait())
            return "\n".join(seen)
        await self.nc.publish(SENTINEL, b"")
        seen = []
        async with asyncio.timeout(FLUSH_TIMEOUT_S):
            while f'"{SENTINEL}"' not in (error := await self._errors.get()):
                seen.append(error)
        return "\n".join(seen)


async def _check_matrix(cluster: LocalCluster) -> list[str]:
    cells = matrix()
    wrong = []
    # The delete by ops is real: everything else first.
    cells.sort(key=lambda cell: cell.subject == _DESTRUCTIVE and cell.allowed)
    probes: dict[str, Probe] = {}
    try:
        for cell in cells:
            probe = probes.get(cell.identity)
            if probe is None:
                credentials = cluster.credentials(cell.identity)
                assert credentials is not None
                probe = probes[cell.identity] = await Probe.connect(cluster.nats_url, credentials)
            if await probe.allowed(cell) != cell.allowed:
                wrong.append(
                    f"{cell.identity}: {cell.what} ({cell.verb} {cell.subject}) "
                    f"{'refused' if cell.allowed else 'allowed'}, the table says "
                    f"{'allowed' if cell.allowed else 'refused'}"
                )
    finally:
        for probe in probes.values():
            await probe.nc.close()
    return wrong


def test_every_cell_of_the_matrix_holds_on_live_servers(cluster: LocalCluster) -> None:
    wrong = asyncio.run(_check_matrix(cluster))
    assert wrong == [], "\n".join(wrong)


async def _refused_connection(url: str, **options: object) -> BaseException | None:
    try:
        nc = await nats.connect(
            servers=url.split(","),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=CONNECT_TIMEOUT_S,
            **options,  # type: ignore[arg-type]
        )
    except Exception as err:
        return err
    await nc.close()
    return None


def _foreign_tls(tmp: Path) -> ssl.SSLContext:
    """A certificate from a CA the cluster does not know."""
    layout = SecretsLayout(tmp / "foreign")
    provide_secrets(layout, identities=["ops"], servers={})
    credentials = NatsCredentials.load(layout.root, "ops")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(credentials.cert_file), str(credentials.key_file))
    return context


def test_no_credentials_no_tls_no_connection(cluster: LocalCluster, tmp_path: Path) -> None:
    url = cluster.nats_url
    gateway = cluster.credentials("gateway")
    assert gateway is not None
    unknown_seed = tmp_path / "unknown.nk"
    unknown_seed.write_bytes(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER))

    async def run() -> dict[str, BaseException | None]:
        return {
            "plaintext, no credentials": await _refused_connection(url),
            "plaintext with a known nkey": await _refused_connection(
                url, nkeys_seed=str(gateway.seed_file)
            ),
            "TLS, no nkey": await _refused_connection(url, tls=gateway.ssl_context()),
            "TLS, an nkey the servers do not know": await _refused_connection(
                url, tls=gateway.ssl_context(), nkeys_seed=str(unknown_seed)
            ),
            "a certificate from another CA": await _refused_connection(
                url, tls=_foreign_tls(tmp_path), nkeys_seed=str(gateway.seed_file)
            ),
        }

    outcomes = asyncio.run(run())
    let_in = [door for door, error in outcomes.items() if error is None]
    assert let_in == [], f"connected: {let_in}"
    # The real credentials do connect (the refusals above are not a dead cluster).
    welcome = _refused_connection(url, tls=gateway.ssl_context(), nkeys_seed=str(gateway.seed_file))
    assert asyncio.run(welcome) is None


def test_a_readable_secret_is_refused(cluster: LocalCluster) -> None:
    assert cluster.secrets is not None
    seed = SecretsLayout(cluster.secrets.root).seed("projector")
    seed.chmod(0o644)
    try:
        with pytest.raises(Exception, match="lets others read it"):
            cluster.credentials("projector")
    finally:
        seed.chmod(0o600)
