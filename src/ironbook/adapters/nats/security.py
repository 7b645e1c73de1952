"""The NATS trust material of a cluster: a CA, certificates, nkey seeds.

    <secrets>/tls/ca.pem                  the CA every link is checked against
    <secrets>/tls/ca-key.pem              its key (only when ironbook made the CA)
    <secrets>/tls/<service>-cert.pem      one certificate per identity and per
    <secrets>/tls/<service>-key.pem       nats-server node (`nats-n1`, ...)
    <secrets>/nats/<identity>.nk          one nkey seed per identity
    <secrets>/jetstream.key               the servers' key for encryption at rest

This layout is a contract (docs/security.md). Directories are 0700 and files
0600; a secret that its group or the world can read is refused, never used.
An operator may supply their own CA and certificates: whatever is in place is
used as it is, and without `ca-key.pem` nothing is issued, so a missing file
is an error that names it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SECRETS_DIR = "secrets"
CA_VALIDITY_DAYS = 3650
CERT_VALIDITY_DAYS = 825
RENEW_BEFORE_DAYS = 30
"""A certificate the local CA issued is issued again when the cluster starts
with less than this left (alerts warn from 21 days: deploy/prometheus-alerts.yml)."""
_SEED_BYTES = 32
_JETSTREAM_KEY_BYTES = 32
_PRIVATE_DIR_MODE = 0o700
_PRIVATE_FILE_MODE = 0o600
_NOT_PRIVATE = stat.S_IRWXG | stat.S_IRWXO


class SecretsError(RuntimeError):
    """Trust material that is missing, malformed or readable by others."""


@dataclass(frozen=True, slots=True)
class SecretsLayout:
    root: Path

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def nkeys_dir(self) -> Path:
        return self.root / "nats"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca-key.pem"

    def cert(self, service: str) -> Path:
        return self.tls_dir / f"{service}-cert.pem"

    def key(self, service: str) -> Path:
        return self.tls_dir / f"{service}-key.pem"

    def seed(self, identity: str) -> Path:
        return self.nkeys_dir / f"{identity}.nk"

    @property
    def jetstream_key(self) -> Path:
        return self.root / "jetstream.key"


def check_private(path: Path) -> None:
    """Refuse a secret (or its directory) that its group or others can use."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretsError(f"{path}: missing") from None
    if mode & _NOT_PRIVATE:
        raise SecretsError(
            f"{path}: mode {stat.S_IMODE(mode):04o} lets others read it; "
            f"chmod {'700' if path.is_dir() else '600'} it"
        )


def _private_dir(path: Path) -> None:
    path.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, _PRIVATE_DIR_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Written 0600 from the first byte (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# Certificates.


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(layout: SecretsLayout) -> None:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ironbook local CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_private(layout.ca_key, _key_pem(key))
    write_private(layout.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _issue(layout: SecretsLayout, service: str, hosts: Iterable[str]) -> None:
    """A certificate for `service` signed by the local CA. With `hosts` it is
    a server certificate too (nats-server uses one certificate for both ends
    of a route), valid for those addresses."""
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    names = sorted(set(hosts))
    if names:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(host) for host in names]), critical=False
        )
    cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
        ca_key, hashes.SHA256()
    )
    write_private(layout.key(service), _key_pem(key))
    write_private(layout.cert(service), cert.public_bytes(serialization.Encoding.PEM))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def not_after(cert_path: Path) -> datetime.datetime:
    """When the certificate in `cert_path` (PEM) stops being valid."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc


def certificate_expiries(layout: SecretsLayout) -> dict[str, float]:
    """Every certificate of the layout (the CA's as `ca`, each service's by its
    name) → its expiry as a Unix time. A file that is not a certificate is
    left out: `provide_secrets` refuses it at the next start."""
    expiries: dict[str, float] = {}
    paths = [("ca", layout.ca_cert)] + [
        (path.name.removesuffix("-cert.pem"), path)
        for path in sorted(layout.tls_dir.glob("*-cert.pem"))
    ]
    for name, path in paths:
        try:
            expiries[name] = not_after(path).timestamp()
        except (OSError, ValueError):
            continue
    return expiries


def _expires_within(cert_path: Path, days: int) -> bool:
    remaining = not_after(cert_path) - datetime.datetime.now(datetime.UTC)
    return remaining < datetime.timedelta(days=days)


def _still_good(cert_path: Path, hosts: Iterable[str]) -> bool:
    """Valid for `hosts` and not about to expire: no need to issue it again."""
    hosts = list(hosts)
    covered = not hosts or _covers(cert_path, hosts)
    return covered and not _expires_within(cert_path, RENEW_BEFORE_DAYS)


def _covers(cert_path: Path, hosts: Iterable[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    have.update(names.get_values_for_type(x509.DNSName))
    return set(hosts) <= have


# Nkeys.


def _make_seed(path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(_SEED_BYTES), nkeys.PREFIX_BYTE_USER)
    write_private(path, seed + b"\n")


def public_nkey(seed_file: Path) -> str:
    """The public key (`U...`) of a user seed file."""
    seed = bytearray(seed_file.read_bytes().strip())
    try:
        pair = nkeys.from_seed(seed)
    except nkeys.NkeysError as err:
        raise SecretsError(f"{seed_file}: not an nkey seed ({err!r})") from None
    try:
        public: bytes = pair.public_key
        if not public.startswith(b"U"):
            raise SecretsError(f"{seed_file}: not a user nkey seed")
        return public.decode()
    finally:
        pair.wipe()


# The whole cluster.


def provide_secrets(
    layout: SecretsLayout, *, identities: Iterable[str], servers: Mapping[str, Iterable[str]]
) -> dict[str, str]:
    """Make whatever is missing (with a local CA), check everything, and
    return each identity's public nkey.

    `servers`: nats-server node name → the addresses its certificate must be
    valid for. Files already in place are kept: an operator's own CA and
    certificates are used as they are (and, without the CA key, a missing
    certificate is an error rather than one issued by another CA). With the
    CA key, a certificate within `RENEW_BEFORE_DAYS` of its expiry is issued
    again."""
    _private_dir(layout.root)
    _private_dir(layout.tls_dir)
    _private_dir(layout.nkeys_dir)
    issuing = not layout.ca_cert.exists()
    if issuing:
        _make_ca(layout)
    can_issue = layout.ca_key.exists()
    wanted: dict[str, list[str]] = {identity: [] for identity in identities}
    for node, hosts in servers.items():
        wanted[server_service(node)] = [*hosts, "127.0.0.1", "localhost"]
    for service, hosts in wanted.items():
        cert, key = layout.cert(service), layout.key(service)
        present = cert.exists() and key.exists()
        if present and (not can_issue or _still_good(cert, hosts)):
            continue
        if not can_issue:
            raise SecretsError(
                f"{cert} / {key}: missing, and no {layout.ca_key.name} to issue them "
                "(operator-supplied TLS: put every certificate in place)"
            )
        _issue(layout, service, hosts)
    if not layout.jetstream_key.exists():
        write_private(layout.jetstream_key, secrets.token_hex(_JETSTREAM_KEY_BYTES).encode())
    check_private(layout.jetstream_key)
    keys: dict[str, str] = {}
    for identity in identities:
        seed = layout.seed(identity)
        if not seed.exists():
            _make_seed(seed)
        check_private(seed)
        keys[identity] = public_nkey(seed)
    for path in (layout.root, layout.tls_dir, layout.nkeys_dir):
        check_private(path)
    for service in wanted:
        check_private(layout.key(service))
    if layout.ca_key.exists():
        check_private(layout.ca_key)
    return keys


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one identity may do: the subjects it may publish to and
    subscribe to (NATS wildcards), and whether it may answer requests it
    received (publish to their reply subjects)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responds: bool = False
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """What every nats-server node of a secured cluster is configured with:
    mutual TLS on client and route links, and one nkey user per identity."""

    layout: SecretsLayout
    users: Mapping[str, tuple[str, Permissions]]
    """Identity → (public nkey, permissions)."""

    def jetstream_key(self) -> str:
        """The key JetStream encrypts its stores with (ChaCha20-Poly1305)."""
        key = self.layout.jetstream_key.read_text().strip()
        if not key:
            raise SecretsError(f"{self.layout.jetstream_key}: empty")
        return key


def server_service(node: str) -> str:
    """The certificate name of nats-server node `node` (`n1` → `nats-n1`)."""
    return f"nats-{node}"


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What a nats-server node's config names."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def server_tls(layout: SecretsLayout, node: str) -> ServerTls:
    service = server_service(node)
    return ServerTls(layout.ca_cert, layout.cert(service), layout.key(service))


def inbox_prefix(identity: str) -> str:
    """Where an identity's replies arrive (nats-py `inbox_prefix`), so that
    its allow-list can name its own inbox and nobody else's."""
    return f"_INBOX.{identity}"


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    """How one identity connects: its certificate (mutual TLS, checked
    against the cluster's CA) and its nkey seed (the server's allow-lists)."""

    identity: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    seed_file: Path

    @classmethod
    def load(cls, root: Path, identity: str) -> NatsCredentials:
        """The identity's files under `root`, checked present and private."""
        layout = SecretsLayout(root)
        credentials = cls(
            identity=identity,
            ca_file=layout.ca_cert,
            cert_file=layout.cert(identity),
            key_file=layout.key(identity),
            seed_file=layout.seed(identity),
        )
        for path in (credentials.key_file, credentials.seed_file):
            check_private(path)
        if not credentials.cert_file.exists() or not credentials.ca_file.exists():
            raise SecretsError(
                f"{credentials.cert_file} or {credentials.ca_file}: missing "
                f"(the {identity!r} identity needs both)"
            )
        return credentials

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context
