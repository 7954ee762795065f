"""`ct keygen`, `ct keys reencrypt`: the encryption key that seals addresses and kept messages."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli._common import database, out, stores
from worker.core.config import Settings


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="encryption keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    reencrypt = keys_sub.add_parser(
        "reencrypt", help="re-encrypt stored addresses under the current key"
    )
    reencrypt.set_defaults(handler=cmd_reencrypt)
    keygen = sub.add_parser("keygen", help="print a new CT_ENCRYPTION_KEY")
    keygen.set_defaults(handler=cmd_keygen)


async def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from worker.core.crypto import generate_key

    out(generate_key())
    return 0


async def cmd_reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    async with database(settings) as (db, dialect):
        kept = stores(settings, db, dialect)
        seen, rewritten = await kept.aliases.reencrypt_all()
        messages_seen, messages_rewritten = await kept.messages.reencrypt()
        subjects_seen, rewrapped = await kept.subject_keys.rewrap_all()
    out(f"{seen} aliases checked, {rewritten} re-encrypted under the current key")
    out(f"{subjects_seen} subject keys checked, {rewrapped} rewrapped (their data stays as it is)")
    out(f"{messages_seen} kept messages checked, {messages_rewritten} re-sealed")
    return 0
