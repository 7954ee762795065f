"""SPF, DKIM and DMARC evaluated against a real DNS server (dnsmasq on loopback)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.dns import LoopbackDns
from tests.support.net import free_port
from tests.support.senders import SenderDomain, publish_all
from worker.adapters.dns import DnsClient, DnsUnavailable, Nameserver, parse_resolvers
from worker.adapters.mail_auth import SenderAuthenticator
from worker.domain.sender_auth import DmarcPolicy, Result

AUTHORISED, OTHER = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def name() -> Callable[[str], str]:
    """Domain names of this test alone: the DNS server is shared by the whole session."""
    run = uuid.uuid4().hex[:8]
    return lambda label: f"{label}-{run}.example"


def authenticator(dns: LoopbackDns, timeout_s: float = 3.0) -> SenderAuthenticator:
    return SenderAuthenticator(DnsClient(parse_resolvers(dns.resolver), timeout_s=timeout_s))


def message(sender: str, subject: str = "Your order") -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: c1f0@ct.example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@test>\r\n\r\nHello there\r\n"
    ).encode()


async def test_spf_passes_for_the_authorised_address_only(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    shop = SenderDomain(name("shop"), AUTHORISED)
    publish_all(dns_server, shop)
    auth = authenticator(dns_server)
    sender = f"orders@{shop.name}"
    good = await auth.authenticate(
        message(sender), client_ip=AUTHORISED, mail_from=sender, helo="mx.test"
    )
    bad = await auth.authenticate(message(sender), client_ip=OTHER, mail_from=sender, helo="x")
    assert (good.spf.result, good.spf.aligned, good.spf.domain) == (Result.PASS, True, shop.name)
    assert bad.spf.result is Result.FAIL
    # No DMARC record: an aligned SPF pass is what authenticates.
    assert good.dmarc.result is Result.NONE and good.authenticated()
    assert not bad.authenticated()


async def test_spf_follows_include_redirect_a_and_mx_across_lookups(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    carrier, esp, base = name("carrier"), name("esp"), name("base")
    dns_server.publish_txt(carrier, f"v=spf1 include:{esp} mx a:relay.{carrier} redirect={base}")
    dns_server.publish_txt(esp, "v=spf1 ip4:127.0.0.21 -all")
    dns_server.publish_mx(carrier, f"mx.{carrier}")
    dns_server.publish_a(f"mx.{carrier}", "127.0.0.22")
    dns_server.publish_a(f"relay.{carrier}", "127.0.0.23")
    dns_server.publish_txt(base, "v=spf1 ip4:127.0.0.24 ~all")
    dns_server.apply()
    auth = authenticator(dns_server)
    results = {}
    for ip in ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24", "127.0.0.25"):
        verdict = await auth.spf(
            client_ip=ip, mail_from=f"t@{carrier}", helo="mx.test", org_domain=carrier
        )
        results[ip] = verdict.result
    assert list(results.values()) == [
        Result.PASS, Result.PASS, Result.PASS, Result.PASS, Result.SOFTFAIL,
    ]  # fmt: skip


async def test_a_null_sender_is_checked_by_its_helo_name(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    helo = f"mx.{name('bounces')}"
    dns_server.publish_txt(helo, f"v=spf1 ip4:{AUTHORISED} -all")
    dns_server.apply()
    verdict = await authenticator(dns_server).spf(
        client_ip=AUTHORISED, mail_from="<>", helo=helo, org_domain=None
    )
    assert (verdict.result, verdict.identity, verdict.domain) == (Result.PASS, "helo", helo)


async def test_every_dkim_signature_is_verified_and_reported(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    shop = SenderDomain(name("shop"), None, "v=DMARC1; p=reject")
    esp = SenderDomain(name("esp"), None, selector="mail")
    publish_all(dns_server, shop, esp)
    sender = f"orders@{shop.name}"
    signed = esp.sign(shop.sign(message(sender)))
    auth = authenticator(dns_server)
    verdict = await auth.authenticate(signed, client_ip=OTHER, mail_from=sender, helo="mx.test")
    assert [(d.result, d.domain, d.selector, d.aligned) for d in verdict.dkim] == [
        (Result.PASS, esp.name, "mail", False),
        (Result.PASS, shop.name, "s1", True),
    ]
    # SPF has nothing to say (no record) but the aligned signature makes DMARC pass.
    assert verdict.spf.result is Result.NONE
    assert (verdict.dmarc.result, verdict.dmarc.policy) == (Result.PASS, DmarcPolicy.REJECT)

    tampered = signed.replace(b"Hello there", b"Pay here")
    broken = await auth.authenticate(tampered, client_ip=OTHER, mail_from=sender, helo="mx.test")
    assert [d.result for d in broken.dkim] == [Result.FAIL, Result.FAIL]
    assert (broken.dmarc.result, broken.dmarc.policy) == (Result.FAIL, DmarcPolicy.REJECT)


async def test_a_signature_whose_key_is_not_published_is_a_permerror(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    ghost = SenderDomain(name("ghost"))  # never published
    sender = f"a@{ghost.name}"
    verdict = await authenticator(dns_server).authenticate(
        ghost.sign(message(sender)), client_ip=OTHER, mail_from=sender, helo="mx.test"
    )
    assert [d.result for d in verdict.dkim] == [Result.PERMERROR]


async def test_dmarc_is_found_at_the_organisational_domain_and_sp_applies(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    org = SenderDomain(name("brand"), AUTHORISED, "v=DMARC1; p=reject; sp=quarantine")
    testing = SenderDomain(name("trial"), AUTHORISED, "v=DMARC1; p=reject; t=y")
    publish_all(dns_server, org, testing)
    auth = authenticator(dns_server)
    sender = f"news@mail.{org.name}"
    verdict = await auth.authenticate(message(sender), client_ip=OTHER, mail_from=sender, helo="x")
    assert verdict.org_domain == org.name
    assert (verdict.dmarc.result, verdict.dmarc.policy) == (Result.FAIL, DmarcPolicy.QUARANTINE)
    # Relaxed alignment: MAIL FROM at the organisational domain passes for the subdomain.
    passing = await auth.authenticate(
        message(sender), client_ip=AUTHORISED, mail_from=f"b@{org.name}", helo="x"
    )
    assert passing.dmarc.result is Result.PASS
    trial = f"x@{testing.name}"
    lowered = await auth.authenticate(message(trial), client_ip=OTHER, mail_from=trial, helo="x")
    assert (lowered.dmarc.result, lowered.dmarc.policy) == (Result.FAIL, DmarcPolicy.QUARANTINE)


async def test_servfail_makes_spf_and_dmarc_temperror_not_a_verdict(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    broken = name("broken")
    dns_server.fail(broken)
    dns_server.apply()
    sender = f"a@{broken}"
    verdict = await authenticator(dns_server).authenticate(
        message(sender), client_ip=AUTHORISED, mail_from=sender, helo="mx.test"
    )
    assert verdict.spf.result is Result.TEMPERROR
    assert verdict.dmarc.result is Result.TEMPERROR


async def test_a_resolver_that_never_answers_gives_temperror_within_the_timeout(
    name: Callable[[str], str],
) -> None:
    silent = DnsClient([Nameserver("127.0.0.1", free_port())], timeout_s=1.0)
    sender = f"a@{name('anywhere')}"
    started = time.monotonic()
    verdict = await SenderAuthenticator(silent).authenticate(
        message(sender), client_ip=AUTHORISED, mail_from=sender, helo="mx.test"
    )
    assert time.monotonic() - started < 5
    assert (verdict.spf.result, verdict.dmarc.result) == (Result.TEMPERROR, Result.TEMPERROR)
    with pytest.raises(DnsUnavailable):
        await silent.lookup(f"_dmarc.{name('x')}", "TXT")


async def test_answers_are_cached_for_their_ttl(tmp_path: Path) -> None:
    server = LoopbackDns(tmp_path / "dns", ttl=2)
    server.publish_txt("cached.example", "v=spf1 -all")
    server.apply()
    client = DnsClient(parse_resolvers(server.resolver), timeout_s=1.0)
    try:
        assert await client.txt("cached.example") == (b"v=spf1 -all",)
        server.stop()
        # The server is gone, yet the answer is still served within its TTL ...
        assert await client.txt("cached.example") == (b"v=spf1 -all",)
        await asyncio.sleep(2.2)
        # ... and after it the resolver must ask again, and cannot.
        with pytest.raises(DnsUnavailable):
            await client.txt("cached.example")
    finally:
        server.stop()


async def test_many_concurrent_evaluations_share_the_loop(
    dns_server: LoopbackDns, name: Callable[[str], str]
) -> None:
    shop = SenderDomain(name("busy"), AUTHORISED, "v=DMARC1; p=none")
    publish_all(dns_server, shop)
    auth = authenticator(dns_server)
    sender = f"orders@{shop.name}"
    verdicts = await asyncio.gather(
        *(
            auth.authenticate(
                shop.sign(message(sender, f"n{i}")),
                client_ip=AUTHORISED if i % 2 else OTHER,
                mail_from=sender,
                helo="mx.test",
            )
            for i in range(50)
        )
    )
    assert [v.spf.result for v in verdicts] == [
        Result.PASS if i % 2 else Result.FAIL for i in range(50)
    ]
    assert all(v.dmarc.result is Result.PASS for v in verdicts)
