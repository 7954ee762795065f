"""`ct dkim keygen`, `ct dns records`, `ct alias unsuppress`: mail authentication and bounces."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.config import Settings
from worker.usage import UsageError


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


async def cmd_dkim_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import TypeAdapter, ValidationError

    from worker.config import Selector
    from worker.dkim_keys import generate_key, write_key
    from worker.domain.dkim import SigningKey
    from worker.domain.dns_records import DnsRecord, zone_lines

    try:
        selector = TypeAdapter(Selector).validate_python(args.selector.lower())
    except ValidationError:
        raise UsageError(
            f"ct dkim keygen: --selector {args.selector!r} is not a DNS label (e.g. s2026)"
        ) from None
    try:
        key = generate_key(args.algorithm, args.bits)
    except ValueError as exc:
        raise UsageError(f"ct dkim keygen: --bits: {exc}") from None
    try:
        write_key(key, args.out, overwrite=args.force)
    except FileExistsError:
        raise UsageError(
            f"ct dkim keygen: {args.out} exists; pass --force to replace it (and its DNS record)"
        ) from None
    except OSError as exc:
        raise UsageError(f"ct dkim keygen: cannot write {args.out}: {exc.strerror}") from None
    signing = SigningKey(selector, key)
    record = DnsRecord(
        f"{selector}._domainkey.{settings.domain}", "TXT", signing.dns_record(),
        f"DKIM {signing.algorithm} key {args.out}",
    )  # fmt: skip
    _out(zone_lines([record], ttl=3600))
    prefix = "CT_DKIM_ED25519" if args.algorithm == "ed25519" else "CT_DKIM"
    key_variable = "CT_DKIM_ED25519_KEY_FILE" if args.algorithm == "ed25519" else (
        "CT_DKIM_PRIVATE_KEY_FILE"
    )  # fmt: skip
    print(
        f"wrote {args.out} (0600). Publish the record above, then set "
        f"{prefix}_SELECTOR={selector} {key_variable}={args.out.resolve()}",
        file=sys.stderr,
    )
    return 0


async def cmd_dns_records(args: argparse.Namespace, settings: Settings) -> int:
    from worker.dkim_keys import load_signer
    from worker.domain.dns_records import alias_domain_records, zone_lines

    if not 60 <= args.ttl <= 604_800:
        raise UsageError("ct dns records: --ttl must be between 60 and 604800 seconds")
    signer = load_signer(settings)
    records = alias_domain_records(
        settings.domain,
        dkim_keys=signer.keys,
        mx_host=args.mx or f"mx.{settings.domain}",
        spf_mechanisms=args.spf,
        dmarc_policy=args.dmarc_policy,
        rua=args.rua or f"mailto:dmarc-reports@{settings.domain}",
    )
    _out(f"; DNS records for the alias domain {settings.domain} (ct dns records)")
    _out(zone_lines(records, args.ttl))
    return 0


async def delivery_state(
    db: Any, dialect: Any, aliases: Any, settings: Settings, record: Any
) -> str:
    """One line for `ct alias resolve`: whether the order's customer is suppressed, and why."""
    from worker.adapters.suppressions import Suppressions
    from worker.crypto import AddressCipher
    from worker.events import ParticipantRole

    customer = next(
        (r for r in await aliases.of_order(record.order_id) if r.role is ParticipantRole.CUSTOMER),
        None,
    )
    if customer is None:
        return "-"
    address_hash = AddressCipher(settings.data_keys()).address_hash(customer.real_address)
    found = await Suppressions(db, dialect, store_wide=settings.bounce_suppress_store).active(
        record.order_id, record.store_id, address_hash, every=True
    )
    if not found:
        return "the customer is emailed (no hard bounce)"
    first = min(found, key=lambda s: s.since)
    scopes = " and ".join(
        "this order"
        if s.scope == "order"
        else f"every order of store {s.store_id}"
        + ("" if settings.bounce_suppress_store else " (CT_BOUNCE_SUPPRESS_STORE is off)")
        for s in found
    )
    return (
        f"SUPPRESSED for {scopes}: the customer's address bounced hard ({first.status}) on "
        f"{first.since:%Y-%m-%d %H:%M} UTC; `ct alias unsuppress ALIAS --reason ...` lifts it"
    )


async def cmd_alias_unsuppress(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from worker.adapters.audit import AuditLog
    from worker.adapters.suppressions import Suppressions
    from worker.admin import unsuppress_alias
    from worker.commands import _alias_store, _database
    from worker.crypto import AddressCipher

    if not args.reason.strip():
        raise UsageError("ct alias unsuppress: --reason must say why (it is audited)")
    async with _database(settings) as (db, dialect):
        found, lifted = await unsuppress_alias(
            _alias_store(settings, db, dialect), AuditLog(db),
            Suppressions(db, dialect, store_wide=settings.bounce_suppress_store),
            AddressCipher(settings.data_keys()), args.alias, reason=args.reason,
            operator=args.operator or getpass.getuser(),
        )  # fmt: skip
    if not found:
        print(f"ct alias unsuppress: no alias {args.alias!r} (audited)", file=sys.stderr)
        return 1
    if not lifted:
        _out("nothing to lift: the order's customer is not suppressed (audited)")
        return 0
    for suppression in lifted:
        scope = "order" if suppression.scope == "order" else f"store {suppression.store_id}"
        since = f"{suppression.since:%Y-%m-%d}"
        _out(f"lifted the {scope} suppression ({suppression.status}, since {since})")
    return 0
