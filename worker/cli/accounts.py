"""`ct user`, `ct token`, `ct messages purge`, `ct console`: console users and retention.

Whoever runs `ct` on the deployment's machine acts as a platform admin."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from worker.cli._common import database, out, stores
from worker.cli.usage import UsageError
from worker.core.config import Settings
from worker.domain.accounts import AccountError, Role, parse_duration
from worker.services.accounts import Accounts, Principal, platform_operator


def register(sub: Any) -> None:
    user = sub.add_parser("user", help="console users")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser(
        "add", help="add a user; the password comes from stdin, or is generated and printed"
    )
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "support"])
    add.add_argument("--generate", action="store_true", help="generate the password, print it")
    add.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="STORE_ID",
        help="a store the user is for (repeat it); none: a platform operator of every store",
    )
    add.set_defaults(handler=cmd_user_add)
    scope = user_sub.add_parser("scope", help="give a user stores, or take some away")
    scope.add_argument("name")
    scope.add_argument("--add", action="append", default=[], metavar="STORE_ID")
    scope.add_argument("--remove", action="append", default=[], metavar="STORE_ID")
    scope.set_defaults(handler=cmd_user_scope)
    passwd = user_sub.add_parser("passwd", help="set a user's password (stdin) or generate one")
    passwd.add_argument("name")
    passwd.add_argument("--generate", action="store_true", help="generate the password, print it")
    passwd.set_defaults(handler=cmd_user_passwd)
    user_sub.add_parser("list", help="print the users, their roles and stores").set_defaults(
        handler=cmd_user_list
    )
    remove = user_sub.add_parser("remove", help="remove a user, ending sessions and tokens")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_user_remove)

    token = sub.add_parser("token", help="API tokens (Authorization: Bearer ...)")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="make a token and print it once")
    create.add_argument("--user", required=True, help="the user whose role the token has")
    create.add_argument("--label", default="", help="what the token is for")
    create.add_argument(
        "--store",
        action="append",
        default=[],
        metavar="STORE_ID",
        help="narrow the token to this store of its user's (repeat it); none: the user's stores",
    )
    create.add_argument(
        "--expires-in",
        default="90d",
        metavar="DURATION",
        help="90d, 12h, 30m, 45s, or never (default: 90d)",
    )
    create.set_defaults(handler=cmd_token_create)
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=cmd_token_revoke)
    token_sub.add_parser(
        "list", help="print the tokens (ids, users, stores, expiry, last use)"
    ).set_defaults(handler=cmd_token_list)

    messages = sub.add_parser("messages", help="kept messages")
    messages_sub = messages.add_subparsers(dest="action", required=True)
    messages_sub.add_parser(
        "purge", help="delete messages older than CT_MESSAGE_RETENTION_DAYS now"
    ).set_defaults(handler=cmd_messages_purge)

    console = sub.add_parser(
        "console", help="make a one-time admin password, print the URL, serve the console"
    )
    console.add_argument("--user", default="admin", help="the admin user (made if missing)")
    console.set_defaults(handler=cmd_console)


@asynccontextmanager
async def _accounts(settings: Settings) -> AsyncIterator[Accounts]:
    from worker.adapters import mongo
    from worker.apps.web import build_accounts
    from worker.domain.aliases import SystemClock

    client = mongo.connect(settings, app_name="ct-cli")
    try:
        yield build_accounts(client[settings.mongo_db], settings, SystemClock())
    finally:
        await client.close()


def _operator(args: argparse.Namespace) -> Principal:
    return platform_operator(f"{getpass.getuser()} (ct)")


def read_password(generate: bool) -> str | None:
    """The new password from stdin (a prompt on a terminal); None: generate one."""
    if generate:
        return None
    if sys.stdin.isatty():
        first = getpass.getpass("Password (empty: generate one): ")
        if not first:
            return None
        if getpass.getpass("Again: ") != first:
            raise UsageError("ct user: the two passwords differ")
        return first
    lines = sys.stdin.read().splitlines()
    return lines[0] if lines and lines[0] else None


def _fail(exc: AccountError, command: str) -> int:
    print(f"ct {command}: {exc}", file=sys.stderr)
    return 2


async def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(args.generate)
    async with _accounts(settings) as accounts:
        try:
            user, generated = await accounts.add_user(
                args.name, Role(args.role), password, by=_operator(args), stores=args.store
            )
        except AccountError as exc:
            return _fail(exc, "user add")
    out(f"user {user.name} added with the {user.role.value} role, {user.scope.describe()}")
    if generated:
        out(f"password: {generated}")
        out("(shown only now; `ct user passwd` makes a new one)")
    return 0


async def cmd_user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = read_password(args.generate)
    async with _accounts(settings) as accounts:
        try:
            generated = await accounts.set_password(args.name, password, by=_operator(args))
        except AccountError as exc:
            return _fail(exc, "user passwd")
    out(f"password of {args.name} changed; their sessions ended and their tokens were revoked")
    if generated:
        out(f"password: {generated}")
    return 0


async def cmd_user_scope(args: argparse.Namespace, settings: Settings) -> int:
    if not args.add and not args.remove:
        raise UsageError("ct user scope: name stores with --add STORE_ID or --remove STORE_ID")
    async with _accounts(settings) as accounts:
        try:
            user = await accounts.change_scope(
                args.name, add=args.add, remove=args.remove, by=_operator(args)
            )
        except AccountError as exc:
            return _fail(exc, "user scope")
    out(f"user {user.name}: {user.scope.describe()} (from their next request on)")
    return 0


async def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    async with _accounts(settings) as accounts:
        users = await accounts.users(_operator(args))
    for user in users:
        state = "disabled" if user.disabled else "active"
        out(
            f"{user.name:<24} {user.role.value:<8} {state:<8} since {user.created_at:%Y-%m-%d}"
            f"  stores: {user.scope.describe()}"
        )
    if not users:
        out("no users yet: ct user add NAME --role admin")
    return 0


async def cmd_user_remove(args: argparse.Namespace, settings: Settings) -> int:
    async with _accounts(settings) as accounts:
        try:
            await accounts.remove_user(args.name, by=_operator(args))
        except AccountError as exc:
            return _fail(exc, "user remove")
    out(f"user {args.name} removed; their sessions ended and their tokens were revoked")
    return 0


async def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    async with _accounts(settings) as accounts:
        try:
            made, token = await accounts.create_token(
                args.user,
                args.label,
                by=_operator(args),
                stores=args.store,
                lifetime=parse_duration(args.expires_in),
            )
        except AccountError as exc:
            return _fail(exc, "token create")
    until = f"until {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "never expires"
    print(f"token {token.token_id} for {token.user}, {until} (shown only now):", file=sys.stderr)
    out(made.value)
    return 0


async def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with _accounts(settings) as accounts:
        revoked = await accounts.revoke_token(args.token_id, by=_operator(args))
    if not revoked:
        print(f"ct token revoke: no active token {args.token_id!r}", file=sys.stderr)
        return 1
    out(f"token {args.token_id} revoked")
    return 0


async def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    async with _accounts(settings) as accounts:
        tokens = await accounts.tokens(_operator(args))
    now = datetime.now(UTC)
    for token in tokens:
        if token.revoked_at:
            state = f"revoked {token.revoked_at:%Y-%m-%d}"
        elif token.expires_at and token.expires_at <= now:
            state = f"expired {token.expires_at:%Y-%m-%d}"
        else:
            state = "active"
        until = f"{token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "never"
        used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
        scope = ",".join(sorted(token.stores)) if token.stores is not None else "(its user's)"
        out(
            f"{token.token_id}  {token.user:<20} {state:<18} expires {until:<16} "
            f"used {used:<16} stores {scope}  {token.label}"
        )
    if not tokens:
        out("no tokens yet: ct token create --user NAME")
    return 0


async def cmd_messages_purge(args: argparse.Namespace, settings: Settings) -> int:
    async with database(settings) as (db, dialect):
        purged = await stores(settings, db, dialect).messages.purge_expired()
    out(f"{purged} message(s) older than {settings.message_retention_days} days deleted")
    return 0


async def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    """A one-time admin password, the URL, then the console until Ctrl-C."""
    from worker.apps.runtime import run_services
    from worker.apps.web import WebService
    from worker.core.crypto import AddressCipher
    from worker.devtools.demo_setup import demo_key, state_dir

    if settings.encryption_key is None:
        if not (state_dir() / "demo-encryption.key").exists():
            raise UsageError(
                "ct console: set CT_ENCRYPTION_KEY (the workers' key), or run `make demo` first"
            )
        settings = settings.model_copy(update={"encryption_key": demo_key(settings)})
        out("using the demo's encryption key (CT_ENCRYPTION_KEY is not set)")
    async with _accounts(settings) as accounts:
        try:
            existing = {u.name for u in await accounts.users(_operator(args))}
            if args.user in existing:
                await accounts.set_role(args.user, Role.ADMIN, by=_operator(args))
                await accounts.set_disabled(args.user, False, by=_operator(args))
                password = await accounts.set_password(args.user, None, by=_operator(args))
            else:
                _, password = await accounts.add_user(
                    args.user, Role.ADMIN, None, by=_operator(args)
                )
        except AccountError as exc:
            return _fail(exc, "console")
    host = "[" + settings.web_host + "]" if ":" in settings.web_host else settings.web_host
    out("")
    out(f"  Console:  http://{host}:{settings.web_port}/")
    out(f"  User:     {args.user}")
    out(f"  Password: {password}   (one-time: the next `ct console` replaces it)")
    out("  Ctrl-C stops it.")
    out("")
    cipher = AddressCipher(settings.data_keys())
    return await run_services(settings, [WebService(settings, cipher)])
