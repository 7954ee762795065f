"""Our Authentication-Results header, forged ones, and the rewrite that carries ours alone."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from tests.unit.test_relaying import CARRIER, CUSTOMER, DOMAIN, PARTIES, STORE, make_mail
from worker.contracts.events import ParticipantRole
from worker.domain.auth_results import authentication_results, authserv_id, is_forged
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import AliasView, NeedsReverseAlias, Route, decide_route
from worker.domain.sender_auth import (
    Authentication,
    DkimVerdict,
    DmarcPolicy,
    DmarcVerdict,
    Result,
    SpfVerdict,
)

AUTH = Authentication(
    from_domain="lojabonita.test",
    org_domain="lojabonita.test",
    spf=SpfVerdict(Result.PASS, "mailfrom", "lojabonita.test", True),
    dkim=(
        DkimVerdict(Result.PASS, "lojabonita.test", "s1", True),
        DkimVerdict(Result.FAIL, "esp.example", "x", False),
    ),
    dmarc=DmarcVerdict(Result.PASS, DmarcPolicy.REJECT),
)


def test_the_header_lists_every_method_with_domains_only() -> None:
    value = authentication_results(DOMAIN, AUTH)
    assert value == (
        "relay.example; spf=pass smtp.mailfrom=lojabonita.test;"
        " dkim=pass header.d=lojabonita.test header.s=s1;"
        " dkim=fail header.d=esp.example header.s=x;"
        " dmarc=pass (p=reject) header.from=lojabonita.test"
    )
    assert "@" not in value


def test_a_message_without_signatures_or_from_domain_still_gets_a_well_formed_header() -> None:
    bare = Authentication(
        from_domain=None,
        org_domain=None,
        spf=SpfVerdict(Result.NONE, "helo", "mx.sender.example", False),
        dkim=(),
        dmarc=DmarcVerdict(Result.NONE, None),
    )
    assert authentication_results(DOMAIN, bare) == (
        "relay.example; spf=none smtp.helo=mx.sender.example; dkim=none; dmarc=none"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("relay.example; spf=pass smtp.mailfrom=x.test", "relay.example"),
        ("  RELAY.example.; dkim=pass", "relay.example"),
        ("(forged by someone) relay.example 1; none", "relay.example"),
        ('"relay.example"; dmarc=pass', "relay.example"),
        ("(nested (comment)) relay.example; none", "relay.example"),
        ("mx.google.test; spf=pass", "mx.google.test"),
        ("", None),
        ("(only a comment)", None),
    ],
)
def test_the_authserv_id_of_a_received_header_is_read_however_it_is_written(
    value: str, expected: str | None
) -> None:
    assert authserv_id(value) == expected


def test_only_headers_claiming_our_authserv_id_are_forged() -> None:
    assert is_forged('"Relay.Example" ; dmarc=pass', "relay.example")
    assert not is_forged("mx.google.test; dmarc=pass", "relay.example")
    assert not is_forged("relay.example.evil.test; dmarc=pass", "relay.example")


def test_the_forward_carries_our_header_alone_on_top_and_forged_ones_are_gone() -> None:
    raw = make_mail(
        headers={
            "Authentication-Results": "relay.example; dmarc=pass header.from=lojabonita.test",
            "X-Note": "hello",
        }
    )
    route = decide_route(
        CUSTOMER, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert isinstance(route, Route)
    value = authentication_results(DOMAIN, AUTH)
    forwarded = rewrite_for_forward(
        raw, route, PARTIES, domain=DOMAIN, authentication_results=value
    )
    assert forwarded.startswith(b"Authentication-Results: relay.example; spf=pass")
    message = message_from_bytes(forwarded, policy=default_policy)
    assert message.get_all("Authentication-Results") == [value]


def test_an_unverified_claim_to_be_the_store_gets_a_reverse_alias_and_no_store_name() -> None:
    decision = decide_route(
        CUSTOMER, PARTIES, "bounce@attacker.test", f"Loja Bonita <{STORE.real_address}>", None,
        domain=DOMAIN, sender_verified=False,
    )  # fmt: skip
    assert decision == NeedsReverseAlias(STORE.real_address, "Loja Bonita")
    reverse = AliasView(
        "f00d@relay.example", ParticipantRole.EXTERNAL, "o-1", "s-1", STORE.real_address,
        "Loja Bonita", expired=False,
    )  # fmt: skip
    route = decide_route(
        CUSTOMER, PARTIES, "bounce@attacker.test", f"Loja Bonita <{STORE.real_address}>", reverse,
        domain=DOMAIN, sender_verified=False,
    )  # fmt: skip
    # Never the store's alias, never the store's name: marked external.
    assert isinstance(route, Route) and route.sender_alias == reverse.address
    assert route.sender_name == "External sender (lojabonita.test)"
    # A verified carrier still goes through its own reverse alias.
    verified = decide_route(
        CUSTOMER, PARTIES, CARRIER.real_address, CARRIER.real_address, None, domain=DOMAIN
    )
    assert not isinstance(verified, NeedsReverseAlias)
