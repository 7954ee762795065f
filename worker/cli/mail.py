"""`ct dkim keygen`, `ct dns records`: what the alias domain signs with and publishes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from worker.cli._common import out
from worker.cli.usage import UsageError
from worker.core.config import Settings


def register(sub: Any) -> None:
    dkim = sub.add_parser("dkim", help="DKIM signing keys")
    dkim_sub = dkim.add_subparsers(dest="action", required=True)
    keygen = dkim_sub.add_parser(
        "keygen", help="write a new DKIM private key and print the DNS record to publish"
    )
    keygen.add_argument("--selector", required=True, help="e.g. s2026 (DNS labels)")
    keygen.add_argument("--out", type=Path, required=True, help="private key file (PEM, 0600)")
    keygen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (2048 at least)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    keygen.set_defaults(handler=cmd_dkim_keygen)

    dns = sub.add_parser("dns", help="what to publish in DNS")
    dns_sub = dns.add_subparsers(dest="action", required=True)
    records = dns_sub.add_parser(
        "records",
        help="every record the alias domain needs (MX, SPF, DKIM, DMARC), zone-file syntax",
    )
    records.add_argument("--mx", help="the relay's public host name (default: mx.<CT_DOMAIN>)")
    records.add_argument(
        "--spf",
        default="mx",
        help="SPF mechanisms naming the hosts mail leaves from, e.g. 'ip4:203.0.113.7' "
        "(default: mx)",
    )
    records.add_argument(
        "--dmarc-policy", choices=["none", "quarantine", "reject"], default="quarantine"
    )
    records.add_argument(
        "--rua", help="DMARC aggregate-report URI (default: mailto:dmarc-reports@<CT_DOMAIN>)"
    )
    records.add_argument("--ttl", type=int, default=3600)
    records.set_defaults(handler=cmd_dns_records)


async def cmd_dkim_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import TypeAdapter, ValidationError

    from worker.adapters.dkim_keys import generate_key, write_key
    from worker.core.config import Selector
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
    out(zone_lines([record], ttl=3600))
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
    from worker.adapters.dkim_keys import load_signer
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
    out(f"; DNS records for the alias domain {settings.domain} (ct dns records)")
    out(zone_lines(records, args.ttl))
    return 0
