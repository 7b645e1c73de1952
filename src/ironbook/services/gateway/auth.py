"""Bearer JWTs: who is calling, in which role, and for how long.

Every token names its key (`kid` header), carries a unique id (`jti`), its
issue time (`iat`) and its expiry (`exp`). The verifier holds a key ring (any
number of keys, by kid) and refuses a token whose lifetime (`exp - iat`) is
longer than its role may have, whatever `exp` says, and a token whose jti was
revoked (`revocation.py`), also when it is served from the cache.

Local clusters sign HS256 tokens with the current key of a key directory in
the data directory (`ironbook token` mints them and rotates the key);
production verifies RS256 / ES256 tokens against public keys (`<kid>.pem`),
so gateways never hold a signing key.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ironbook import core
from ironbook.adapters.keyfiles import create_secret_file_once
from ironbook.core import TOKEN_ROLES, TokenRole
from ironbook.services.gateway.revocation import JTI_PATTERN, Revocations

Role = TokenRole
ROLES: tuple[str, ...] = TOKEN_ROLES
LOCAL_ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_BYTES = 8 * 1024
CLOCK_LEEWAY_S = 30
MAX_ID_LENGTH = 64
VERIFIED_CACHE_SIZE = 10_000
DEFAULT_BETTOR_MAX_LIFETIME_S = 86_400
DEFAULT_STAFF_MAX_LIFETIME_S = 3_600
KEY_RELOAD_INTERVAL_S = 1.0
"""How often a verifier looks whether its key directory changed."""
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOCAL_KEY_SUFFIX = ".hs256"
PUBLIC_KEY_SUFFIX = ".pem"
CURRENT_KEY_FILE = "current"


class AuthError(Exception):
    """The request carries no valid credentials; `reason` is logged, not shown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: Role
    account_id: str | None
    """Set for bettors: the one account they may touch."""
    jti: str
    """The token's id: what a revocation names."""
    expires_s: float
    """The token's `exp` (Unix seconds): a WebSocket closes then."""
    ledger: core.Principal
    """The same caller as the ledger sees it, carried on every command the
    gateway sends for this caller."""

    def owns(self, account_id: str) -> bool:
        return self.role == "bettor" and self.account_id == account_id


@dataclass(frozen=True, slots=True)
class MaxLifetimes:
    """The longest `exp - iat` the verifier accepts, per kind of role."""

    bettor_s: int = DEFAULT_BETTOR_MAX_LIFETIME_S
    staff_s: int = DEFAULT_STAFF_MAX_LIFETIME_S

    def of(self, role: str) -> int:
        return self.bettor_s if role == "bettor" else self.staff_s

    @property
    def longest_s(self) -> int:
        return max(self.bettor_s, self.staff_s)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes


# The local key directory.


def local_keys_dir(data_dir: Path) -> Path:
    """The HS256 keys of the local cluster in `data_dir`: `<kid>.hs256` files
    and `current`, the kid `ironbook token` signs with. Gateway workers
    verify with every key in it."""
    return data_dir / "gateway" / "jwt-keys"


def local_signing_key(data_dir: Path) -> SigningKey:
    """The current local signing key, created on first use."""
    return load_or_create_signing_key(local_keys_dir(data_dir))


def load_or_create_signing_key(keys_dir: Path) -> SigningKey:
    """The key `current` names; the first caller creates one (atomically:
    concurrent workers and `ironbook token` all end up with the same key)."""
    with contextlib.suppress(FileNotFoundError):
        return _current_key(keys_dir)
    kid = _new_key(keys_dir)
    create_secret_file_once(keys_dir / CURRENT_KEY_FILE, kid.encode())
    return _current_key(keys_dir)


def rotate_signing_key(keys_dir: Path) -> SigningKey:
    """A new key, made current. The old keys stay in the directory (tokens
    they signed keep verifying) until `retire_key` removes them."""
    kid = _new_key(keys_dir)
    temp = keys_dir / f"{CURRENT_KEY_FILE}.{os.getpid()}.tmp"
    temp.write_text(kid)
    temp.replace(keys_dir / CURRENT_KEY_FILE)
    return _current_key(keys_dir)


def retire_key(keys_dir: Path, kid: str) -> None:
    """Remove a key that is not current: every worker refuses the tokens it
    signed from its next look at the directory (within a second)."""
    if not KID_PATTERN.match(kid):
        raise ValueError(f"not a key id: {kid!r}")
    if _read_text(keys_dir / CURRENT_KEY_FILE) == kid:
        raise ValueError(f"{kid} is the current key; rotate first")
    path = keys_dir / f"{kid}{LOCAL_KEY_SUFFIX}"
    if not path.exists():
        raise ValueError(f"no key {kid} in {keys_dir}")
    path.unlink()


def _current_key(keys_dir: Path) -> SigningKey:
    kid = _read_text(keys_dir / CURRENT_KEY_FILE)
    if not KID_PATTERN.match(kid):
        raise ValueError(f"{keys_dir / CURRENT_KEY_FILE} does not name a key id")
    return SigningKey(kid, _read_secret(keys_dir / f"{kid}{LOCAL_KEY_SUFFIX}"))


def _new_key(keys_dir: Path) -> str:
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    kid = f"k{day}-{secrets.token_hex(4)}"
    create_secret_file_once(keys_dir / f"{kid}{LOCAL_KEY_SUFFIX}", secrets.token_hex(32).encode())
    return kid


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _read_secret(path: Path) -> bytes:
    secret = _read_text(path)
    if len(secret) < 32:
        raise ValueError(f"{path} holds a secret shorter than 32 characters")
    return secret.encode()


def read_keys(keys_dir: Path, algorithm: str) -> dict[str, bytes | str]:
    """Every verification key in `keys_dir`, by kid: `<kid>.hs256` secrets for
    HS256, `<kid>.pem` public keys for RS256 / ES256."""
    suffix = LOCAL_KEY_SUFFIX if algorithm == LOCAL_ALGORITHM else PUBLIC_KEY_SUFFIX
    keys: dict[str, bytes | str] = {}
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(keys_dir.iterdir()):
            kid = path.name[: -len(suffix)]
            if path.name.endswith(suffix) and KID_PATTERN.match(kid):
                keys[kid] = _read_secret(path) if suffix == LOCAL_KEY_SUFFIX else path.read_text()
    return keys


class KeyRing:
    """Verification keys by kid. With a directory, it is checked at most once
    a second (one `stat`) and reread when it changed: a key added by a
    rotation verifies, and a retired one stops verifying, within a second
    on every worker, without a restart."""

    def __init__(
        self, keys: Mapping[str, bytes | str], *, directory: Path | None = None, algorithm: str
    ) -> None:
        self._keys = dict(keys)
        self._directory = directory
        self._algorithm = algorithm
        self._checked_at = time.monotonic()
        self._directory_mtime_ns = self._mtime_ns()

    def get(self, kid: str) -> bytes | str | None:
        if self._directory is not None:
            now = time.monotonic()
            if now - self._checked_at >= KEY_RELOAD_INTERVAL_S:
                self._checked_at = now
                mtime_ns = self._mtime_ns()
                if mtime_ns != self._directory_mtime_ns:
                    self._directory_mtime_ns = mtime_ns
                    self._keys = read_keys(self._directory, self._algorithm)
        return self._keys.get(kid)

    def _mtime_ns(self) -> int:
        if self._directory is None:
            return 0
        try:
            return self._directory.stat().st_mtime_ns
        except FileNotFoundError:
            return 0


# Minting (the local cluster) and verifying.


def mint_token(
    key: SigningKey,
    *,
    role: str,
    sub: str | None = None,
    account_id: str | None = None,
    ttl_s: int | None = None,
    now_s: int | None = None,
    jti: str | None = None,
) -> str:
    """A signed token; `ttl_s` defaults to the role's default maximum lifetime."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "bettor" and not account_id:
        raise ValueError("a bettor token needs an account id")
    issued_s = int(time.time()) if now_s is None else now_s
    lifetime_s = MaxLifetimes().of(role) if ttl_s is None else ttl_s
    claims: dict[str, object] = {
        "sub": sub or (f"bettor:{account_id}" if role == "bettor" else f"{role}:local"),
        "role": role,
        "iat": issued_s,
        "exp": issued_s + lifetime_s,
        "jti": jti or secrets.token_urlsafe(16),
    }
    if account_id is not None:
        claims["account_id"] = account_id
    return jwt.encode(claims, key.secret, algorithm=LOCAL_ALGORITHM, headers={"kid": key.kid})


def token_id(token: str) -> str:
    """The `jti` of a token, unverified (for printing, never for a decision)."""
    jti = jwt.decode(token, options={"verify_signature": False}).get("jti")
    return str(jti)


class TokenVerifier:
    def __init__(
        self,
        keys: KeyRing,
        *,
        algorithm: str = LOCAL_ALGORITHM,
        issuer: str | None = None,
        audience: str | None = None,
        max_lifetimes: MaxLifetimes | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        if algorithm != LOCAL_ALGORITHM and algorithm not in PUBLIC_KEY_ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self._keys = keys
        # Exactly one algorithm: a token may never choose how it is checked.
        self._algorithms = [algorithm]
        self._issuer = issuer
        self._audience = audience
        self.max_lifetimes = max_lifetimes or MaxLifetimes()
        self.revocations = revocations or Revocations(self.max_lifetimes.longest_s)
        self._verified: OrderedDict[str, tuple[Principal, str]] = OrderedDict()
        """token -> (principal, kid): a signature check costs more than the
        rest of a request, and clients send the same token many times.
        Expiry, revocation and the key's presence are checked on every hit."""

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("missing_token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("not_bearer")
        return self.verify_token(token.strip())

    def verify_token(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token_too_large")
        cached = self._verified.get(token)
        if cached is None:
            principal, kid = self._verify_signed(token)
            self._verified[token] = (principal, kid)
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            principal, kid = cached
            if self._keys.get(kid) is None:
                del self._verified[token]
                raise AuthError("unknown_kid")
            self._verified.move_to_end(token)
        if time.time() > principal.expires_s + CLOCK_LEEWAY_S:
            del self._verified[token]
            raise AuthError("expired")
        if self.revocations.is_revoked(principal.jti):
            raise AuthError("revoked")
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, str]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as err:
            raise AuthError(f"invalid:{type(err).__name__}") from err
        if not isinstance(kid, str):
            raise AuthError("no_kid")
        key = self._keys.get(kid) if KID_PATTERN.match(kid) else None
        if key is None:
            raise AuthError("unknown_kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "role", "jti"]},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthError("expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError(f"invalid:{type(err).__name__}") from err
        return self._principal(claims), kid

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub, role, account_id = claims.get("sub"), claims.get("role"), claims.get("account_id")
        jti, issued_s, expires_s = claims.get("jti"), claims.get("iat"), claims.get("exp")
        if not isinstance(sub, str) or not 0 < len(sub) <= 256:
            raise AuthError("bad_sub")
        if role not in ROLES:
            raise AuthError("bad_role")
        if account_id is not None and not (
            isinstance(account_id, str) and 0 < len(account_id) <= MAX_ID_LENGTH
        ):
            raise AuthError("bad_account_id")
        if role == "bettor" and account_id is None:
            raise AuthError("bettor_without_account")
        if not isinstance(jti, str) or not JTI_PATTERN.match(jti):
            raise AuthError("bad_jti")
        if not isinstance(expires_s, int | float) or not isinstance(issued_s, int | float):
            raise AuthError("bad_exp")
        if issued_s > time.time() + CLOCK_LEEWAY_S:
            raise AuthError("issued_in_future")
        if expires_s - issued_s > self.max_lifetimes.of(role):
            raise AuthError("lifetime_too_long")
        return Principal(
            sub=sub,
            role=role,
            account_id=account_id,
            jti=jti,
            expires_s=float(expires_s),
            ledger=core.Principal(subject=sub, role=role, account_id=account_id, token_id=jti),
        )


def load_verifier(
    *,
    algorithm: str,
    keys_dir: Path,
    issuer: str | None = None,
    audience: str | None = None,
    max_lifetimes: MaxLifetimes | None = None,
    revocations: Revocations | None = None,
) -> TokenVerifier:
    """A verifier with every key of `keys_dir`. For HS256 (the local
    cluster) the directory gets its first key if it has none."""
    if algorithm == LOCAL_ALGORITHM:
        load_or_create_signing_key(keys_dir)
    keys = read_keys(keys_dir, algorithm)
    if not keys:
        raise ValueError(f"{keys_dir} holds no {algorithm} key (<kid>{PUBLIC_KEY_SUFFIX})")
    return TokenVerifier(
        KeyRing(keys, directory=keys_dir, algorithm=algorithm),
        algorithm=algorithm,
        issuer=issuer,
        audience=audience,
        max_lifetimes=max_lifetimes,
        revocations=revocations,
    )
