"""`ironbook token`: mint, revoke and rotate the local cluster's bearer tokens.

    ironbook token --role ROLE [--account ID] [--sub S] [--ttl-s N]
    ironbook token revoke JTI
    ironbook token rotate-key
    ironbook token retire-key KID

Minting signs HS256 with the current key of the data directory's key ring
(created on first use, the one the gateway workers verify with) and prints
the token alone on stdout, so `TOKEN=$(ironbook token --role admin --sub alice)`
works in scripts (a staff token names who it is for: `--sub` is required);
its `jti` and expiry go to stderr. A token lives at most its role's maximum
lifetime (settings `gateway.bettor_token_max_lifetime_s`, 24 h, and
`gateway.staff_token_max_lifetime_s`, 1 h); the gateways refuse longer ones.

`revoke` writes the jti into the running cluster's revocation bucket: every
gateway worker refuses the token within a second and closes its WebSockets.
`rotate-key` makes a new current signing key (tokens signed with the old one
keep working until it is retired); `retire-key` removes an old key.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from pathlib import Path

import nats.errors

from ironbook.adapters.nats.provision import NatsEndpoint, close_nats
from ironbook.bootstrap import settings_from
from ironbook.cli.up import add_data_dir_argument
from ironbook.core import STAFF_ROLES
from ironbook.services.gateway.auth import (
    ROLES,
    MaxLifetimes,
    local_keys_dir,
    local_signing_key,
    mint_token,
    retire_key,
    rotate_signing_key,
    token_id,
)
from ironbook.services.gateway.revocation import JTI_PATTERN, RevocationStore
from ironbook.services.local_cluster import read_runtime
from ironbook.settings import ConfigError, Settings

REVOKE_TIMEOUT_S = 10.0


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        return settings_from(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _mint(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    if args.role is None:
        print("error: --role is required to mint a token", file=sys.stderr)
        return 2
    if args.role == "bettor" and not args.account:
        print("error: a bettor token needs --account ID", file=sys.stderr)
        return 2
    if args.role in STAFF_ROLES and not args.sub:
        print(f"error: a {args.role} token needs --sub NAME (who it is for)", file=sys.stderr)
        return 2
    g = settings.gateway
    longest_s = MaxLifetimes(g.bettor_token_max_lifetime_s, g.staff_token_max_lifetime_s).of(
        args.role
    )
    ttl_s = longest_s if args.ttl_s is None else args.ttl_s
    if not 0 < ttl_s <= longest_s:
        print(f"error: a {args.role} token lives 1 to {longest_s} s (--ttl-s)", file=sys.stderr)
        return 2
    key = local_signing_key(settings.cluster.data_dir.resolve())
    token = mint_token(key, role=args.role, sub=args.sub, account_id=args.account, ttl_s=ttl_s)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl_s)
    print(token)
    print(f"jti {token_id(token)}, expires {expires:%Y-%m-%dT%H:%M:%SZ}", file=sys.stderr)
    return 0


async def _revoke(settings: Settings, endpoint: NatsEndpoint, jti: str) -> int:
    nc = await endpoint.connect("ironbook-token-revoke")
    try:
        g = settings.gateway
        lifetimes = MaxLifetimes(g.bettor_token_max_lifetime_s, g.staff_token_max_lifetime_s)
        async with asyncio.timeout(REVOKE_TIMEOUT_S):
            store = await RevocationStore.open(
                nc, replicas=settings.nats.replicas, retention_s=lifetimes.longest_s
            )
            return await store.revoke(jti, by="cli:ironbook-token")
    finally:
        await close_nats(nc)


def _revoke_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    if not JTI_PATTERN.match(args.jti):
        print("error: a jti is 1-128 of [A-Za-z0-9_-]", file=sys.stderr)
        return 2
    data_dir = settings.cluster.data_dir.resolve()
    runtime = read_runtime(data_dir)
    if runtime is None:
        print(f"error: no cluster is running on {data_dir} (`ironbook up`)", file=sys.stderr)
        return 1
    try:
        revoked_at_ms = asyncio.run(_revoke(settings, runtime.endpoint(), args.jti))
    except (TimeoutError, nats.errors.Error, OSError) as err:
        print(f"error: the revocation could not be recorded: {err!r}", file=sys.stderr)
        return 1
    at = datetime.datetime.fromtimestamp(revoked_at_ms / 1000, datetime.UTC)
    print(f"revoked {args.jti} at {at:%Y-%m-%dT%H:%M:%S.%fZ}")
    return 0


def _keys_dir(args: argparse.Namespace) -> Path | None:
    settings = _settings(args)
    if settings is None:
        return None
    return local_keys_dir(settings.cluster.data_dir.resolve())


def _rotate_command(args: argparse.Namespace) -> int:
    keys_dir = _keys_dir(args)
    if keys_dir is None:
        return 2
    key = rotate_signing_key(keys_dir)
    print(f"new current key {key.kid} in {keys_dir}")
    return 0


def _retire_command(args: argparse.Namespace) -> int:
    keys_dir = _keys_dir(args)
    if keys_dir is None:
        return 2
    try:
        retire_key(keys_dir, args.kid)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"retired key {args.kid}: tokens it signed are refused from now on")
    return 0


def _add_data_dir_after_action(parser: argparse.ArgumentParser) -> None:
    """`--config` and `--data-dir` after the action too. Without a default:
    an action's parser must not overwrite what was given before the action."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
    parser.add_argument(
        "--data-dir",
        dest="cluster.data_dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="the cluster's data directory",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="mint, revoke or rotate bearer tokens for the local HTTP API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(parser)
    parser.add_argument("--role", default=None, choices=ROLES)
    parser.add_argument("--account", default=None, help="the bettor's account id")
    parser.add_argument(
        "--sub",
        default=None,
        help="subject: who the token is for (required for staff roles; a bettor's "
        "default is derived from the account)",
    )
    parser.add_argument(
        "--ttl-s",
        type=int,
        default=None,
        help="lifetime in seconds (default and maximum: the role's maximum lifetime)",
    )
    parser.set_defaults(func=_mint)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    revoke = actions.add_parser("revoke", help="revoke a token on every gateway worker")
    _add_data_dir_after_action(revoke)
    revoke.add_argument("jti", help="the token's id (printed on stderr when it was minted)")
    revoke.set_defaults(func=_revoke_command)
    rotate = actions.add_parser("rotate-key", help="make a new current signing key")
    _add_data_dir_after_action(rotate)
    rotate.set_defaults(func=_rotate_command)
    retire = actions.add_parser("retire-key", help="remove an old signing key")
    _add_data_dir_after_action(retire)
    retire.add_argument("kid")
    retire.set_defaults(func=_retire_command)
