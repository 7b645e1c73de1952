"""Bearer JWTs: who is calling, and in which role.

Local clusters sign HS256 tokens with a secret kept in the data directory
(`ironbook token` mints them); production verifies RS256 / ES256 tokens
against a public key, so gateways never hold a signing key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import jwt

Role = Literal["bettor", "trader", "cashier", "admin", "auditor"]
ROLES: tuple[str, ...] = get_args(Role)
STAFF_ROLES: frozenset[str] = frozenset({"trader", "cashier", "admin", "auditor"})
LOCAL_ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_BYTES = 8 * 1024
CLOCK_LEEWAY_S = 30
MAX_ID_LENGTH = 64
VERIFIED_CACHE_SIZE = 10_000


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

    def owns(self, account_id: str) -> bool:
        return self.role == "bettor" and self.account_id == account_id


def local_secret_file(data_dir: Path) -> Path:
    """The HS256 key of the local cluster in `data_dir`: gateway workers
    verify tokens with it, `ironbook token` signs them."""
    return data_dir / "gateway" / "jwt-hs256.secret"


def load_or_create_secret(path: Path) -> bytes:
    """The local HS256 secret, created once (atomically: concurrent workers
    all end up with the same secret) with owner-only permissions."""
    with contextlib.suppress(FileNotFoundError):
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a secret shorter than 32 characters")
    return secret.encode()


def mint_token(
    secret: bytes,
    *,
    role: str,
    sub: str | None = None,
    account_id: str | None = None,
    ttl_s: int = 86_400,
    now_s: int | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "bettor" and not account_id:
        raise ValueError("a bettor token needs an account id")
    issued_s = int(time.time()) if now_s is None else now_s
    claims: dict[str, object] = {
        "sub": sub or (f"bettor:{account_id}" if role == "bettor" else f"{role}:local"),
        "role": role,
        "iat": issued_s,
        "exp": issued_s + ttl_s,
    }
    if account_id is not None:
        claims["account_id"] = account_id
    return jwt.encode(claims, secret, algorithm=LOCAL_ALGORITHM)


class TokenVerifier:
    def __init__(
        self,
        key: bytes | str,
        *,
        algorithm: str = LOCAL_ALGORITHM,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if algorithm != LOCAL_ALGORITHM and algorithm not in PUBLIC_KEY_ALGORITHMS:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self._key = key
        # Exactly one algorithm: a token may never choose how it is checked.
        self._algorithms = [algorithm]
        self._issuer = issuer
        self._audience = audience
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        """token -> (principal, expiry): a signature check costs more than the
        rest of a request, and clients send the same token many times."""

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("missing_token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("not_bearer")
        token = token.strip()
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token_too_large")
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() <= cached[1] + CLOCK_LEEWAY_S:
                self._verified.move_to_end(token)
                return cached[0]
            del self._verified[token]
            raise AuthError("expired")
        principal, expires_s = self._verify_signed(token)
        self._verified[token] = (principal, expires_s)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["exp", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthError("expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError(f"invalid:{type(err).__name__}") from err
        sub, role, account_id = claims.get("sub"), claims.get("role"), claims.get("account_id")
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
        expires_s = claims.get("exp")
        if not isinstance(expires_s, int | float):
            raise AuthError("bad_exp")
        return Principal(sub=sub, role=role, account_id=account_id), float(expires_s)


def load_verifier(
    *,
    algorithm: str,
    secret_file: Path,
    public_key_file: Path | None,
    issuer: str | None = None,
    audience: str | None = None,
) -> TokenVerifier:
    if algorithm == LOCAL_ALGORITHM:
        key: bytes | str = load_or_create_secret(secret_file)
    elif public_key_file is None:
        raise ValueError(f"{algorithm} needs a public key file")
    else:
        key = public_key_file.read_text()
    return TokenVerifier(key, algorithm=algorithm, issuer=issuer, audience=audience)
