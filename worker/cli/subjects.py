"""`ct subject export`, `ct subject erase`: a customer's data on request (LGPD art. 18, GDPR
art. 15 and 17), both audited."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from worker.cli._common import database, out, stores
from worker.cli.usage import UsageError
from worker.core.config import Settings


def register(sub: Any) -> None:
    subject = sub.add_parser("subject", help="a data subject's export and erasure")
    subject_sub = subject.add_subparsers(dest="action", required=True)
    export = subject_sub.add_parser(
        "export", help="everything held about a customer as one JSON document (audited)"
    )
    export.add_argument("--email", required=True, help="the customer's real address")
    export.add_argument("--reason", required=True, help="the request: written to the audit log")
    export.add_argument("--out", type=Path, help="write the document here (default: stdout)")
    export.add_argument("--operator", help="who asks (default: $USER)")
    export.set_defaults(handler=cmd_export)
    erase = subject_sub.add_parser(
        "erase", help="destroy a customer's key and data, everywhere (audited, idempotent)"
    )
    erase.add_argument("--email", required=True, help="the customer's real address")
    erase.add_argument("--reason", required=True, help="the request: written to the audit log")
    erase.add_argument("--operator", help="who asks (default: $USER)")
    erase.set_defaults(handler=cmd_erase)


def _checked(args: argparse.Namespace) -> tuple[str, str]:
    from worker.domain.aliases import InvalidAddress, normalize_address

    if not args.reason.strip():
        raise UsageError(f"ct subject {args.action}: --reason must name the request (audited)")
    try:
        normalize_address(args.email)
    except InvalidAddress as exc:
        raise UsageError(f"ct subject {args.action}: --email is not an address: {exc}") from None
    return args.reason, args.operator or getpass.getuser()


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    reason, operator = _checked(args)
    async with database(settings) as (db, dialect):
        document = await stores(settings, db, dialect).subject_requests.export(
            args.email, reason=reason, operator=operator
        )
    text = json.dumps(document, indent=2, ensure_ascii=False)
    if args.out is None:
        out(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
        counts = {k: len(document[k]) for k in ("orders", "aliases", "messages", "suppressions")}
        print(f"ct subject export: {args.out}: {counts}", file=sys.stderr)
    return 0


async def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    reason, operator = _checked(args)
    async with database(settings) as (db, dialect):
        erasure = await stores(settings, db, dialect).subject_requests.erase(
            args.email, reason=reason, operator=operator
        )
    if erasure.already:
        out(f"subject {erasure.address_hash[:16]}: already erased, nothing left to erase")
    else:
        out(
            f"subject {erasure.address_hash[:16]}: erased {erasure.subjects_erased} key(s), "
            f"{erasure.aliases} alias(es) of {erasure.orders} order(s), "
            f"{erasure.messages_deleted} kept message(s), "
            f"{erasure.suppressions_lifted} suppression(s)"
        )
    return 0
