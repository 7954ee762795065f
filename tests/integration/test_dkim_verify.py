"""Our DKIM signatures, checked by verifiers that are not ours against keys in a real DNS server.

Perl's Mail::DKIM (RSA) and dkimpy (RSA and Ed25519) each fetch the public keys from dnsmasq on
loopback, where they are
published exactly as `ct dns records` prints them. Covered: notifications in both locales from
hard- and soft-aliased orders, and relay forwards carrying attachments, each as the final bytes
(after the relay's rewriting). The workers' own output (captured at the SMTP sink) is checked the
same way in the notifier and relay tests.
"""

from __future__ import annotations

import os
import re
import time
from email.message import EmailMessage
from email.utils import parseaddr

import dkim
import pytest

from tests.support.dkim import ED25519_SELECTOR, SELECTOR, DkimKeys, dns_txt, mail_dkim
from tests.support.dns import LoopbackDns
from tests.support.events import order_event
from worker.contracts.events import OrderStatus, ParticipantRole
from worker.domain import aliases
from worker.domain.compose import compose_notification
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import AliasView, OrderParties, Route, decide_route
from worker.domain.templates import TemplateRenderer

DOMAIN = "ct.example.com"
# Debian 12's Mail::DKIM (1.20230212) predates its Ed25519 support: it passes the RSA signature
# and calls the Ed25519 one unsupported, as RFC 8463 wants from such verifiers (dual signing is
# for them). dkimpy, with PyNaCl, checks the Ed25519 one.
MAIL_DKIM_VERDICTS = [
    f"pass d={DOMAIN} s={SELECTOR} a=rsa-sha256 pass",
    f"invalid d={DOMAIN} s={ED25519_SELECTOR} a=ed25519-sha256 invalid (unsupported algorithm",
]


def _from_domain(message: bytes) -> str:
    header = next(line for line in message.split(b"\r\n") if line.lower().startswith(b"from:"))
    return parseaddr(header.decode().split(":", 1)[1])[1].rpartition("@")[2]


def _aligned(from_domain: str) -> bool:
    """DMARC relaxed alignment with d=: the same domain or one of its subdomains (which share
    its organizational domain under any public suffix list)."""
    return from_domain == DOMAIN or from_domain.endswith("." + DOMAIN)


def _verify_both_ways(signed: bytes, server: LoopbackDns) -> None:
    verdicts = mail_dkim(signed, server)
    assert [line[: len(v)] for line, v in zip(verdicts, MAIL_DKIM_VERDICTS, strict=True)] == (
        MAIL_DKIM_VERDICTS
    ), verdicts
    lookup = dns_txt(server)
    for index in range(2):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=lookup), index


@pytest.mark.parametrize("locale", ["en", "pt-BR"])
@pytest.mark.parametrize("mask", [aliases.MaskType.HARD, aliases.MaskType.SOFT])
@pytest.mark.parametrize("status", [OrderStatus.SHIPPED, OrderStatus.INVOICED])
def test_notifications_verify_at_an_independent_verifier(
    dkim_dns: LoopbackDns,
    dkim_keys: DkimKeys,
    locale: str,
    mask: aliases.MaskType,
    status: OrderStatus,
) -> None:
    event = order_event(
        "ORD-7", status, locale=locale, first_name="João" if locale == "pt-BR" else "Jane"
    )
    plan = aliases.choose_order_aliases(mask, event.customer.email, event.store.email, DOMAIN)
    assert plan.mask is mask
    composed = compose_notification(
        TemplateRenderer(None).render(event),
        event=event,
        store_alias=plan.store_alias,
        customer_alias=plan.customer_alias,
        domain=DOMAIN,
    )
    signed = dkim_keys.signer(DOMAIN).sign(composed.raw, timestamp=int(time.time()))
    _verify_both_ways(signed, dkim_dns)
    assert _aligned(_from_domain(signed))
    if mask is aliases.MaskType.SOFT:
        assert _from_domain(signed) != DOMAIN  # a subdomain: aligned only in relaxed mode
    # An altered signed field fails: the verifier is not saying pass to everything.
    tampered = signed.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1)
    assert mail_dkim(tampered, dkim_dns)[0].startswith(f"fail d={DOMAIN} s={SELECTOR}")
    assert not dkim.DKIM(tampered).verify(idx=1, dnsfunc=dns_txt(dkim_dns))


def _view(address: str, role: ParticipantRole, real: str, name: str) -> AliasView:
    return AliasView(address, role, "ORD-7", "store-1", real, name, expired=False)


@pytest.mark.parametrize("mask", [aliases.MaskType.HARD, aliases.MaskType.SOFT])
def test_forwards_with_attachments_verify_after_the_rewrite(
    dkim_dns: LoopbackDns, dkim_keys: DkimKeys, mask: aliases.MaskType
) -> None:
    plan = aliases.choose_order_aliases(mask, "jane.roe@example.org", "sac@shop.example", DOMAIN)
    customer = _view(plan.customer_alias, ParticipantRole.CUSTOMER, "jane.roe@example.org", "Jane")
    store = _view(plan.store_alias, ParticipantRole.STORE, "sac@shop.example", "Shop")
    parties = OrderParties(customer, store)
    mail = EmailMessage()
    mail["From"] = "Shop Support <sac@shop.example>"
    mail["To"] = plan.customer_alias
    mail["Cc"] = "sac@shop.example"
    mail["Subject"] = "Sua nota fiscal, pedido ORD-7"
    mail["DKIM-Signature"] = "v=1; a=rsa-sha256; d=shop.example; s=x; b=stale"
    mail.set_content("Olá Jane,\n\nsegue a nota fiscal do seu pedido.\n")
    mail.add_attachment(os.urandom(30_000), maintype="application", subtype="pdf",
                        filename="nota-fiscal-ORD-7.pdf")  # fmt: skip
    mail.add_attachment("linha;valor\n1;2\n", subtype="csv", filename="itens.csv")
    raw = bytes(mail)
    route = decide_route(customer, parties, "sac@shop.example", mail["From"], None, domain=DOMAIN)
    assert isinstance(route, Route)
    forwarded = rewrite_for_forward(raw, route, parties, domain=DOMAIN)
    signed = dkim_keys.signer(DOMAIN).sign(forwarded, timestamp=int(time.time()))
    assert b"d=shop.example" not in signed  # the sender's own signature does not travel on
    _verify_both_ways(signed, dkim_dns)
    assert _aligned(_from_domain(signed))
    # The real address appears nowhere (a soft alias embeds it, followed by its token).
    assert not re.search(rb"sac@shop\.example(?![-\w.])", signed)
