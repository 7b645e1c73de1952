"""Tokens and the edge's address rules, without a cluster: kid key rings and
rotation, the maximum lifetime per role, jti and revocation (on cache hits
too), trusted proxies, and the WebSocket caps."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ironbook.cli import main
from ironbook.services.gateway.auth import (
    AuthError,
    KeyRing,
    MaxLifetimes,
    SigningKey,
    TokenVerifier,
    load_or_create_signing_key,
    load_verifier,
    mint_token,
    read_keys,
    retire_key,
    rotate_signing_key,
    token_id,
)
from ironbook.services.gateway.revocation import RETENTION_MARGIN_S, Revocations
from ironbook.services.gateway.traffic import BadForwardedFor, ConnectionCaps, ForwardedFor

KEY = SigningKey("k1", b"s" * 64)


def _verifier(*keys: SigningKey, lifetimes: MaxLifetimes | None = None) -> TokenVerifier:
    ring = KeyRing({key.kid: key.secret for key in keys or (KEY,)}, algorithm="HS256")
    return TokenVerifier(ring, max_lifetimes=lifetimes)


def _bearer(token: str) -> str:
    return f"Bearer {token}"


def test_hs256_tokens_carry_kid_jti_and_the_principal() -> None:
    verifier = _verifier()
    token = mint_token(KEY, role="bettor", account_id="alice")
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    principal = verifier.verify(_bearer(token))
    assert (principal.sub, principal.role, principal.account_id) == (
        "bettor:alice",
        "bettor",
        "alice",
    )
    assert principal.jti == token_id(token)
    assert principal.expires_s == pytest.approx(time.time() + 86_400, abs=5)
    assert principal.owns("alice")
    assert not principal.owns("bob")
    assert verifier.verify(f"bearer {token}") == principal  # the cached path
    assert mint_token(KEY, role="admin") != mint_token(KEY, role="admin"), "a fresh jti each"
    with pytest.raises(AuthError, match="unknown_kid"):
        _verifier(SigningKey("k2", KEY.secret)).verify(_bearer(token))
    with pytest.raises(AuthError, match="invalid"):
        _verifier(SigningKey("k1", b"t" * 64)).verify(_bearer(token))
    expired = mint_token(KEY, role="admin", ttl_s=1, now_s=1_000)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(_bearer(expired))
    with pytest.raises(ValueError, match="bettor"):
        mint_token(KEY, role="bettor")
    with pytest.raises(ValueError, match="role"):
        mint_token(KEY, role="root")


def test_staff_tokens_default_to_an_hour() -> None:
    token = mint_token(KEY, role="trader")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3_600


@pytest.mark.parametrize(
    ("role", "account_id", "lifetime_s", "accepted"),
    [
        ("admin", None, 30 * 86_400, False),
        ("cashier", None, 3_601, False),
        ("auditor", None, 3_600, True),
        ("bettor", "alice", 2 * 86_400, False),
        ("bettor", "alice", 86_400, True),
    ],
)
def test_the_verifier_caps_the_lifetime_per_role(
    role: str, account_id: str | None, lifetime_s: int, accepted: bool
) -> None:
    token = mint_token(KEY, role=role, account_id=account_id, ttl_s=lifetime_s)
    if accepted:
        assert _verifier().verify(_bearer(token)).role == role
    else:
        with pytest.raises(AuthError, match="lifetime_too_long"):
            _verifier().verify(_bearer(token))


def test_configured_lifetimes_are_shorter_still() -> None:
    strict = _verifier(lifetimes=MaxLifetimes(bettor_s=600, staff_s=60))
    with pytest.raises(AuthError, match="lifetime_too_long"):
        strict.verify(_bearer(mint_token(KEY, role="admin", ttl_s=61)))
    assert strict.verify(_bearer(mint_token(KEY, role="admin", ttl_s=60))).role == "admin"


def _signed(claims: dict[str, object], headers: dict[str, str] | None = None) -> str:
    return jwt.encode(
        claims, KEY.secret, "HS256", headers={"kid": "k1"} if headers is None else headers
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"jti": None}, "invalid:MissingRequiredClaimError"),
        ({"iat": None}, "invalid:MissingRequiredClaimError"),
        ({"jti": "has.a.dot"}, "bad_jti"),
        ({"jti": "x" * 129}, "bad_jti"),
        ({"iat": "now"}, "invalid"),
        ({"role": "root"}, "bad_role"),
    ],
)
def test_claims_that_are_missing_or_malformed_are_refused(
    change: dict[str, object], reason: str
) -> None:
    now = int(time.time())
    claims: dict[str, object] = {"sub": "s", "role": "admin", "iat": now, "exp": now + 60}
    claims["jti"] = "j-1"
    for name, value in change.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    with pytest.raises(AuthError, match=reason):
        _verifier().verify(_bearer(_signed(claims)))


def test_a_token_without_kid_or_issued_in_the_future_is_refused() -> None:
    now = int(time.time())
    claims = {"sub": "s", "role": "admin", "iat": now, "exp": now + 60, "jti": "j"}
    with pytest.raises(AuthError, match="no_kid"):
        _verifier().verify(_bearer(_signed(claims, headers={})))
    future = {**claims, "iat": now + 600, "exp": now + 660}
    with pytest.raises(AuthError):
        _verifier().verify(_bearer(_signed(future)))


def test_a_revoked_token_is_refused_even_from_the_cache() -> None:
    verifier = _verifier()
    token = mint_token(KEY, role="bettor", account_id="alice")
    other = mint_token(KEY, role="bettor", account_id="alice")
    assert verifier.verify(_bearer(token)).account_id == "alice"  # now cached
    verifier.revocations.add(token_id(token), time.time())
    with pytest.raises(AuthError, match="revoked"):
        verifier.verify(_bearer(token))
    assert verifier.verify(_bearer(other)).account_id == "alice", "only that jti"
    revoked_first = mint_token(KEY, role="admin")
    verifier.revocations.add(token_id(revoked_first), time.time())
    with pytest.raises(AuthError, match="revoked"):
        verifier.verify(_bearer(revoked_first))


def test_revocations_are_kept_one_lifetime_then_dropped() -> None:
    revocations = Revocations(retention_s=3_600)
    revocations.add("old", 0.0, now_s=0.0)
    revocations.add("new", 3_000.0, now_s=3_000.0)
    assert revocations.is_revoked("old") and revocations.is_revoked("new")
    revocations.add("newer", 3_700.0 + RETENTION_MARGIN_S, now_s=3_601.0 + RETENTION_MARGIN_S)
    assert not revocations.is_revoked("old")
    assert revocations.is_revoked("new")
    assert len(revocations) == 2


def test_a_waiting_socket_learns_its_revocation() -> None:
    async def run() -> None:
        revocations = Revocations(retention_s=60)
        async with asyncio.TaskGroup() as group:
            waiting = group.create_task(revocations.wait_revoked("j-1"))
            other = group.create_task(revocations.wait_revoked("j-2"))
            await asyncio.sleep(0)
            revocations.add("j-1", time.time())
            await asyncio.wait_for(waiting, 1)
            assert not other.done()
            other.cancel()
        await asyncio.wait_for(revocations.wait_revoked("j-1"), 1)  # already revoked

    asyncio.run(run())


def test_key_rotation_and_retirement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_dir = tmp_path / "jwt-keys"
    first = load_or_create_signing_key(keys_dir)
    assert load_or_create_signing_key(keys_dir) == first
    key_file = keys_dir / f"{first.kid}.hs256"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not list(keys_dir.glob("*.tmp"))
    verifier = load_verifier(algorithm="HS256", keys_dir=keys_dir)
    old_token = mint_token(first, role="admin")
    assert verifier.verify(_bearer(old_token)).role == "admin"

    clock = [time.monotonic()]
    monkeypatch.setattr("ironbook.services.gateway.auth.time.monotonic", lambda: clock[0])
    second = rotate_signing_key(keys_dir)
    assert second.kid != first.kid
    assert load_or_create_signing_key(keys_dir) == second, "the signer uses the new key"
    new_token = mint_token(second, role="admin")
    clock[0] += 1.5  # the verifier looks at its directory again
    assert verifier.verify(_bearer(new_token)).role == "admin"
    assert verifier.verify(_bearer(old_token)).role == "admin", "old tokens still verify"

    with pytest.raises(ValueError, match="current"):
        retire_key(keys_dir, second.kid)
    retire_key(keys_dir, first.kid)
    clock[0] += 1.5
    with pytest.raises(AuthError, match="unknown_kid"):
        verifier.verify(_bearer(old_token))  # cached, but its key is gone
    assert set(read_keys(keys_dir, "HS256")) == {second.kid}


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_tokens_and_no_algorithm_confusion(tmp_path: Path, algorithm: str) -> None:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp-2026.pem").write_bytes(public_pem)
    verifier = load_verifier(algorithm=algorithm, keys_dir=tmp_path, issuer="idp")
    now = int(time.time())
    claims = {"sub": "ops-1", "role": "trader", "iat": now, "exp": now + 600, "iss": "idp"}
    claims["jti"] = "t-1"
    kid = {"kid": "idp-2026"}
    token = jwt.encode(claims, private_key, algorithm=algorithm, headers=kid)
    assert verifier.verify(_bearer(token)).role == "trader"
    forged = jwt.encode(claims, KEY.secret, algorithm="HS256", headers=kid)
    with pytest.raises(AuthError):
        verifier.verify(_bearer(forged))
    wrong_issuer = jwt.encode({**claims, "iss": "other"}, private_key, algorithm, headers=kid)
    with pytest.raises(AuthError):
        verifier.verify(_bearer(wrong_issuer))
    with pytest.raises(ValueError, match="no RS256 key"):
        load_verifier(algorithm="RS256", keys_dir=tmp_path / "empty")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a proxy: the header is ignored
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["1.2.3.4, 198.51.100.1, 10.0.0.2"], "198.51.100.1"),
        ("10.0.0.1", ["garbage, 198.51.100.1"], "198.51.100.1"),  # left of the client: unread
        ("10.0.0.1", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # only proxies: the first
        ("10.0.0.1", [" 2001:db8::1 "], "2001:db8::1"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert ForwardedFor(["10.0.0.0/24"]).client(peer, forwarded) == client


@pytest.mark.parametrize("forwarded", ["unknown", "198.51.100.1, not-an-ip", "1.2.3.4:80", ""])
def test_an_unreadable_hop_is_refused(forwarded: str) -> None:
    with pytest.raises(BadForwardedFor):
        ForwardedFor(["10.0.0.0/24"]).client("10.0.0.1", [forwarded])


def test_no_trusted_proxies_means_the_peer() -> None:
    assert ForwardedFor().client("10.0.0.1", ["198.51.100.1"]) == "10.0.0.1"


def test_websocket_caps_per_address_and_per_principal() -> None:
    caps = ConnectionCaps(per_ip=3, per_principal=2)
    assert caps.try_open("1.1.1.1", "alice") is None
    assert caps.try_open("1.1.1.1", "alice") is None
    assert caps.try_open("1.1.1.1", "alice") == "at most 2 WebSockets per principal"
    assert caps.try_open("1.1.1.1", "bob") is None
    assert caps.try_open("1.1.1.1", "carol") == "at most 3 WebSockets per address"
    assert caps.try_open("2.2.2.2", "carol") is None
    caps.close("1.1.1.1", "alice")
    assert caps.try_open("1.1.1.1", "alice") is None
    for ip, sub in [("1.1.1.1", "alice")] * 2 + [("1.1.1.1", "bob"), ("2.2.2.2", "carol")]:
        caps.close(ip, sub)
    assert caps.open == 0


def test_the_token_command_mints_rotates_and_retires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = str(tmp_path)
    assert main(["token", "--data-dir", data_dir, "--role", "cashier", "--sub", "carol"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3_600
    assert f"jti {claims['jti']}" in err
    first_kid = jwt.get_unverified_header(token)["kid"]
    assert (
        main(
            ["token", "--data-dir", data_dir, "--role", "admin", "--sub", "ann", "--ttl-s", "3601"]
        )
        == 2
    )
    assert main(["token", "--data-dir", data_dir, "--role", "bettor"]) == 2  # no --account
    assert main(["token", "rotate-key", "--data-dir", data_dir]) == 0
    assert main(["token", "--data-dir", data_dir, "rotate-key"]) == 0  # either order
    capsys.readouterr()
    assert main(["token", "--data-dir", data_dir, "--role", "admin", "--sub", "ann"]) == 0
    newest_kid = jwt.get_unverified_header(capsys.readouterr().out.strip())["kid"]
    keys_dir = tmp_path / "gateway" / "jwt-keys"
    assert newest_kid != first_kid
    assert len(read_keys(keys_dir, "HS256")) == 3
    assert main(["token", "retire-key", newest_kid, "--data-dir", data_dir]) == 2  # current
    assert main(["token", "retire-key", first_kid, "--data-dir", data_dir]) == 0
    assert first_kid not in read_keys(keys_dir, "HS256")
    assert main(["token", "revoke", "abc", "--data-dir", data_dir]) == 1  # no cluster running
