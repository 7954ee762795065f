"""The relay's screening collaborator with a real resolver: authentication, marketing, limits."""

from __future__ import annotations

import uuid

import pytest

from tests.support.dns import LoopbackDns
from tests.support.senders import SenderDomain, publish_all
from tests.unit.test_relaying import CUSTOMER, PARTIES, STORE
from worker.core.config import load_settings
from worker.domain.replies import MARKETING_REFUSED, NOT_AUTHENTICATED, RATE_LIMITED
from worker.domain.routing import AliasView, OrderParties
from worker.domain.screening import Accepted
from worker.domain.sender_auth import Refused
from worker.services.screening import Screened, SenderScreen

AUTHORISED, OTHER = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def parties(dns_server: LoopbackDns) -> tuple[OrderParties, SenderDomain]:
    """An order whose store's domain publishes SPF for 127.0.0.2 and `p=none`."""
    shop = SenderDomain(f"shop-{uuid.uuid4().hex[:8]}.example", AUTHORISED, "v=DMARC1; p=none")
    publish_all(dns_server, shop)
    store = AliasView(
        STORE.address, STORE.role, "o-1", "s-1", f"orders@{shop.name}", "Shop", expired=False
    )
    return OrderParties(CUSTOMER, store, PARTIES.externals), shop


def screener(dns: LoopbackDns, **settings: object) -> SenderScreen:
    return SenderScreen.from_settings(
        load_settings(domain="relay.example", dns_resolvers=dns.resolver, **settings)
    )


def mail(sender: str, **headers: str) -> bytes:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"From: {sender}\r\nTo: {CUSTOMER.address}\r\nSubject: hi\r\n{extra}"
        f"Message-ID: <{uuid.uuid4().hex}@test>\r\n\r\nbody\r\n"
    ).encode()


async def test_the_store_passes_and_its_forger_goes_out_as_an_external_sender(
    dns_server: LoopbackDns, parties: tuple[OrderParties, SenderDomain]
) -> None:
    order, shop = parties
    store = order.store.real_address
    screen = screener(dns_server)
    genuine = await screen.screen(
        mail(store), client_ip=AUTHORISED, mail_from=store, helo="mx", recipient=CUSTOMER,
        parties=order,
    )  # fmt: skip
    assert isinstance(genuine.outcome, Accepted)
    assert (genuine.outcome.sender_verified, genuine.outcome.external) == (True, False)
    assert genuine.authentication_results is not None
    assert genuine.authentication_results.startswith("relay.example; spf=pass")
    assert f"header.from={shop.name}" in genuine.authentication_results
    forged = await screen.screen(
        mail(store), client_ip=OTHER, mail_from=store, helo="mx", recipient=CUSTOMER, parties=order
    )
    assert isinstance(forged.outcome, Accepted)
    assert (forged.outcome.sender_verified, forged.outcome.external) == (False, True)
    assert forged.outcome.verdicts.startswith("sender-not-authenticated; spf=fail")


async def test_a_reject_policy_failure_is_refused_for_anyone(dns_server: LoopbackDns) -> None:
    strict = SenderDomain(
        f"strict-{uuid.uuid4().hex[:8]}.example", AUTHORISED, "v=DMARC1; p=reject"
    )
    publish_all(dns_server, strict)
    sender = f"promo@{strict.name}"
    screened = await screener(dns_server).screen(
        mail(sender), client_ip=OTHER, mail_from=sender, helo="mx", recipient=CUSTOMER,
        parties=PARTIES,
    )  # fmt: skip
    assert isinstance(screened.outcome, Refused) and screened.outcome.reply == NOT_AUTHENTICATED


async def test_marketing_and_floods_from_strangers_are_refused_and_recorded_once(
    dns_server: LoopbackDns,
) -> None:
    screen = screener(dns_server, relay_rate_per_alias=2)
    stranger = "deals@stranger.example"

    async def send(raw: bytes) -> Screened:
        return await screen.screen(
            raw, client_ip=OTHER, mail_from=stranger, helo="mx", recipient=CUSTOMER,
            parties=PARTIES,
        )  # fmt: skip

    marketing = await send(mail(stranger, List_Unsubscribe="<mailto:u@stranger.example>"))
    assert isinstance(marketing.outcome, Refused) and marketing.outcome.reply == MARKETING_REFUSED
    # The refusal counted against the limit too (issue 19: guessing is slowed like a flood).
    results = [await send(mail(stranger)) for _ in range(5)]
    assert [isinstance(r.outcome, Accepted) for r in results] == [True, False, False, False, False]
    limited = results[1:]
    assert all(isinstance(r.outcome, Refused) and r.outcome.reply == RATE_LIMITED for r in limited)
    assert [r.record for r in limited] == [True, False, False, False]
    assert limited[0].cause == limited[1].cause


async def test_authentication_off_trusts_the_headers_and_adds_no_header(
    dns_server: LoopbackDns, parties: tuple[OrderParties, SenderDomain]
) -> None:
    order, _ = parties
    store = order.store.real_address
    screened = await screener(dns_server, relay_sender_auth="off").screen(
        mail(store), client_ip=OTHER, mail_from=store, helo="mx", recipient=CUSTOMER, parties=order
    )
    assert screened.authentication_results is None
    assert screened.outcome == Accepted(True, False, "sender-authentication-off")
