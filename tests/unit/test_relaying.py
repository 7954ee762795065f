"""The relay's pure policy and rewriting: routes, refusals, masked headers, untouched bodies."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

import pytest

from worker.contracts.events import Direction, ParticipantRole
from worker.domain.headers import read_header
from worker.domain.relay_events import forward_event_id, message_key
from worker.domain.replies import (
    BOUNCE_NOT_RELAYED,
    LOOP_DETECTED,
    MAX_HEADER_FIELDS,
    NOT_AUTHENTICATED,
    MessageRejected,
)
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import (
    AliasView,
    NeedsReverseAlias,
    OrderParties,
    Refusal,
    Route,
    decide_route,
)
from worker.domain.summary import summarize

DOMAIN = "relay.example"
CUSTOMER = AliasView(
    "c1f0@relay.example", ParticipantRole.CUSTOMER, "o-1", "s-1", "maria@gmail.test",
    "Maria Silva", expired=False,
)  # fmt: skip
STORE = AliasView(
    "5a7e@relay.example", ParticipantRole.STORE, "o-1", "s-1", "sac@lojabonita.test",
    "Loja Bonita", expired=False,
)  # fmt: skip
CARRIER = AliasView(
    "ca44@relay.example", ParticipantRole.EXTERNAL, "o-1", "s-1", "rastreio@carrier.test",
    "Carrier Express", expired=False,
)  # fmt: skip
PARTIES = OrderParties(CUSTOMER, STORE, (CARRIER,))
REAL_ADDRESSES = ("maria@gmail.test", "sac@lojabonita.test", "rastreio@carrier.test")
PDF = b"%PDF-1.4\n" + os.urandom(4096) + b"\r\n\x00\xff"

LEAKS = {
    "Received": "from mail.lojabonita.test (sac@lojabonita.test [203.0.113.9]) by mx.relay.example",
    "Return-Path": "<sac@lojabonita.test>",
    "Sender": "sac@lojabonita.test",
    "X-Originating-IP": "[203.0.113.9]",
    "DKIM-Signature": "v=1; a=rsa-sha256; d=lojabonita.test; s=s1; b=abc",
    "ARC-Seal": "i=1; a=rsa-sha256; d=lojabonita.test; s=arc; b=xyz",
    "X-Google-Smtp-Source": "AGHT+abc",
    "Delivered-To": "sac@lojabonita.test",
    "Disposition-Notification-To": "sac@lojabonita.test",
    "Authentication-Results": "mx.relay.example; spf=pass smtp.mailfrom=sac@lojabonita.test",
}


def make_mail(
    *,
    sender: str | None = "Loja Bonita <sac@lojabonita.test>",
    to: str = CUSTOMER.address,
    subject: str = "Seu pedido 1001 foi enviado",
    text: str = "Olá Maria, seu pedido saiu para entrega.",
    html: str | None = None,
    attachment: bytes | None = PDF,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    if sender is not None:
        msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<abc.1001@mail.lojabonita.test>"
    for name, value in (headers or {}).items():
        msg[name] = value
    if html is None:
        msg.set_content(text)
    else:
        msg.set_content(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="nota-fiscal.pdf"
        )
    return msg.as_bytes(policy=policy.SMTP)


def route_for(recipient: AliasView, envelope: str, header_from: str | None) -> Route:
    decision = decide_route(recipient, PARTIES, envelope, header_from, None, domain=DOMAIN)
    assert isinstance(decision, Route), decision
    return decision


def header_block(raw: bytes) -> bytes:
    head, separator, _ = raw.partition(b"\r\n\r\n")
    assert separator
    return head


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def test_store_writing_to_the_customer_alias_appears_as_the_store_alias() -> None:
    route = route_for(CUSTOMER, "SAC@LojaBonita.test", "Loja Bonita <sac@lojabonita.test>")

    assert route.deliver_to == "maria@gmail.test"
    assert (route.sender_alias, route.sender_role) == (STORE.address, ParticipantRole.STORE)
    assert route.direction is Direction.TO_CUSTOMER
    forwarded = parse(rewrite_for_forward(make_mail(), route, PARTIES, domain=DOMAIN))
    assert forwarded["From"] == f"Loja Bonita <{STORE.address}>"
    assert forwarded["Reply-To"] == STORE.address


def test_customer_writing_to_the_store_alias_appears_as_the_customer_alias() -> None:
    route = route_for(STORE, "maria@gmail.test", "Maria <maria@gmail.test>")

    assert route.deliver_to == "sac@lojabonita.test"
    assert (route.sender_alias, route.sender_role) == (CUSTOMER.address, ParticipantRole.CUSTOMER)
    assert route.direction is Direction.TO_STORE
    assert route.sender_name == "Maria Silva"


def test_sender_sending_through_a_provider_is_known_by_its_from_address() -> None:
    route = route_for(CUSTOMER, "bounces+8x1@esp.test", "Loja <sac@lojabonita.test>")

    assert route.sender_alias == STORE.address


def test_unknown_carrier_needs_a_reverse_alias_then_routes_through_it() -> None:
    parties = OrderParties(CUSTOMER, STORE)
    header_from = "=?utf-8?q?Transportadora_R=C3=A1pida?= <Entregas@Rapida.test>"

    first = decide_route(
        CUSTOMER, parties, "entregas@rapida.test", header_from, None, domain=DOMAIN
    )
    assert first == NeedsReverseAlias("entregas@rapida.test", "Transportadora Rápida")

    created = AliasView(
        "9e0f@relay.example", ParticipantRole.EXTERNAL, "o-1", "s-1", "entregas@rapida.test",
        None, expired=False,
    )  # fmt: skip
    route = decide_route(
        CUSTOMER, parties, "entregas@rapida.test", header_from, created, domain=DOMAIN
    )
    assert isinstance(route, Route)
    assert (route.sender_alias, route.sender_role) == (created.address, ParticipantRole.EXTERNAL)
    assert route.sender_name == "Transportadora Rápida (external, rapida.test)"
    raw = make_mail(sender=header_from, headers={"Cc": "entregas@rapida.test"})
    head = header_block(rewrite_for_forward(raw, route, parties, domain=DOMAIN))
    assert b"rapida.test" not in head.lower()
    assert parse(head + b"\r\n\r\n")["From"] == (
        f'"Transportadora Rápida (external, rapida.test)" <{created.address}>'
    )


def test_a_reverse_alias_of_another_sender_is_a_wiring_error() -> None:
    with pytest.raises(ValueError, match="reverse alias"):
        decide_route(
            CUSTOMER, OrderParties(CUSTOMER, STORE), "x@other.test", None, CARRIER, domain=DOMAIN
        )


def test_known_carrier_writing_to_the_store_uses_its_reverse_alias() -> None:
    route = route_for(STORE, "rastreio@carrier.test", "Carrier <rastreio@carrier.test>")

    assert (route.sender_alias, route.sender_name) == (
        CARRIER.address, "Carrier Express (external, carrier.test)",
    )  # fmt: skip


def test_customer_writing_to_a_reverse_alias_reaches_the_carrier() -> None:
    route = route_for(CARRIER, "maria@gmail.test", "Maria Silva <maria@gmail.test>")

    assert route.deliver_to == "rastreio@carrier.test"
    assert (route.sender_alias, route.sender_role) == (CUSTOMER.address, ParticipantRole.CUSTOMER)
    assert route.direction is Direction.TO_EXTERNAL


@pytest.mark.parametrize(
    ("envelope", "header_from"),
    [
        ("stranger@spam.test", "Stranger <stranger@spam.test>"),
        ("sac@lojabonita.test", "sac@lojabonita.test"),
        ("maria@gmail.test", "Someone <someone@else.test>"),
        ("someone@else.test", "Maria <maria@gmail.test>"),
        ("maria@gmail.test", None),
    ],
)
def test_only_the_customer_may_write_to_a_reverse_alias(
    envelope: str, header_from: str | None
) -> None:
    decision = decide_route(CARRIER, PARTIES, envelope, header_from, None, domain=DOMAIN)

    assert decision == Refusal(550, NOT_AUTHENTICATED)
    assert decision.text.startswith("550 5.7.1 ")


def test_an_expired_alias_is_refused_as_a_permanent_failure() -> None:
    decision = decide_route(
        replace(CUSTOMER, expired=True), PARTIES, "sac@lojabonita.test", None, None, domain=DOMAIN
    )

    assert isinstance(decision, Refusal)
    assert decision.code == 550
    assert decision.text.startswith("550 5.1.1 ")
    assert "expired" in decision.text


def test_bounces_are_not_relayed_because_they_quote_real_addresses() -> None:
    decision = decide_route(STORE, PARTIES, "", "MAILER-DAEMON@gmail.test", None, domain=DOMAIN)

    assert decision == Refusal.of(BOUNCE_NOT_RELAYED)


def test_an_alias_of_another_order_as_sender_is_a_loop() -> None:
    decision = decide_route(
        STORE, PARTIES, "ffff@relay.example", "ffff@relay.example", None, domain=DOMAIN
    )

    assert decision == Refusal.of(LOOP_DETECTED)


def test_rewrite_drops_origin_headers_and_leaks_no_real_address() -> None:
    raw = make_mail(
        subject="Re: pedido de maria@gmail.test",
        headers={**LEAKS, "Reply-To": "sac@lojabonita.test", "X-Mailer": "Bling 3.1"},
    )
    route = route_for(CUSTOMER, "sac@lojabonita.test", "sac@lojabonita.test")

    head = header_block(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    for address in REAL_ADDRESSES:
        assert address.encode() not in head.lower()
    names = {line.split(b":")[0].lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"}
    assert names.isdisjoint(name.lower().encode() for name in LEAKS)
    forwarded = parse(head + b"\r\n\r\n")
    assert forwarded["Subject"] == f"Re: pedido de {CUSTOMER.address}"
    assert forwarded["X-Mailer"] == "Bling 3.1"
    assert forwarded.get_all("Reply-To") == [STORE.address]


def test_an_address_inside_an_encoded_word_is_masked_too() -> None:
    encoded = (
        "=?utf-8?b?" + base64.b64encode("Devolução: maria@gmail.test".encode()).decode() + "?="
    )
    raw = f"X-Ticket: {encoded}\r\n".encode() + make_mail()
    assert b"maria@gmail.test" not in raw
    route = route_for(STORE, "maria@gmail.test", "maria@gmail.test")

    head = header_block(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    assert parse(head + b"\r\n\r\n")["X-Ticket"] == f"Devolução: {CUSTOMER.address}"
    assert head.isascii()


def test_to_and_cc_show_aliases_and_keep_third_parties() -> None:
    raw = make_mail(
        to='"Maria" <maria@gmail.test>, "sac@lojabonita.test" <sac@lojabonita.test>',
        headers={"Cc": "Rastreio <RASTREIO@carrier.test>, Contador <contas@escritorio.test>"},
    )
    route = route_for(CUSTOMER, "sac@lojabonita.test", "sac@lojabonita.test")

    forwarded = parse(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    assert getaddresses(forwarded.get_all("To", [])) == [
        ("Maria", CUSTOMER.address),
        ("", STORE.address),  # a name that is an address would unmask it
    ]
    assert getaddresses(forwarded.get_all("Cc", [])) == [
        ("Rastreio", CARRIER.address),
        ("Contador", "contas@escritorio.test"),
    ]


def test_a_recipient_group_without_addresses_is_kept() -> None:
    raw = make_mail(to="undisclosed-recipients:;")
    route = route_for(CUSTOMER, "sac@lojabonita.test", None)

    head = header_block(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    assert b"\r\nTo: undisclosed-recipients:;" in head


def test_threading_headers_survive_the_rewrite() -> None:
    references = "<a.1@mail.gmail.test> <b.2@mail.lojabonita.test>"
    raw = make_mail(headers={"In-Reply-To": "<b.2@mail.lojabonita.test>", "References": references})
    route = route_for(CUSTOMER, "sac@lojabonita.test", None)

    forwarded = parse(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    assert forwarded["Message-ID"] == "<abc.1001@mail.lojabonita.test>"
    assert forwarded["In-Reply-To"] == "<b.2@mail.lojabonita.test>"
    assert forwarded["References"] == references


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_attachment_and_body_bytes_survive_the_rewrite(linesep: str) -> None:
    raw = make_mail().replace(b"\r\n", linesep.encode()) if linesep == "\n" else make_mail()
    body = raw.split(linesep.encode() * 2, 1)[1]
    route = route_for(CUSTOMER, "sac@lojabonita.test", None)

    out = rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN)

    assert out.endswith(b"\r\n\r\n" + body)
    attachments = list(parse(out).iter_attachments())
    assert [a.get_filename() for a in attachments] == ["nota-fiscal.pdf"]
    assert attachments[0].get_payload(decode=True) == PDF


def test_8bit_and_malformed_headers_do_not_crash_and_leave_as_ascii() -> None:
    raw = (
        b"From: Jo\xc3\xa3o da Loja <sac@lojabonita.test>\r\n"
        b"To: maria@gmail.test\r\n"
        b"Subject: Pedido n\xc2\xba 1001 enviado\r\n"
        b"X-Legacy: caf\xe9 \xff\xfe\r\n"
        b"X-Note: bare\rCR and \x00 nul\r\n"
        b"X-Folded: one\r\n two\r\n"
        b"Message-ID: <m@x.test>\r\n"
        b"\r\n"
        b"corpo\r\n"
    )
    route = route_for(CUSTOMER, "sac@lojabonita.test", read_header(raw, "from"))

    head = header_block(rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN))

    assert head.isascii()
    assert b"\r" not in head.replace(b"\r\n", b"")
    assert b"\n" not in head.replace(b"\r\n", b"")
    forwarded = parse(head + b"\r\n\r\n")
    assert forwarded["From"] == f"Loja Bonita <{STORE.address}>"
    assert forwarded["To"] == CUSTOMER.address
    assert forwarded["Subject"] == "Pedido nº 1001 enviado"
    assert forwarded["X-Legacy"] == "café ÿþ"  # not UTF-8: read as Latin-1, the likeliest legacy
    assert forwarded["X-Folded"] == "one two"


def test_a_missing_from_and_message_id_are_synthesised_deterministically() -> None:
    raw = b"To: c1f0@relay.example\r\nSubject: oi\r\n\r\nsem remetente\r\n"
    route = route_for(CUSTOMER, "rastreio@carrier.test", None)

    out = rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN)

    forwarded = parse(out)
    assert forwarded["From"].addresses[0].display_name == "Carrier Express (external, carrier.test)"
    assert forwarded["From"].addresses[0].addr_spec == CARRIER.address
    assert forwarded["Message-ID"].startswith("<ct-relay-")
    assert forwarded["Message-ID"].endswith(f"@{DOMAIN}>")
    assert out == rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN)


def test_a_display_name_holding_an_address_is_dropped() -> None:
    header_from = '"rastreio@carrier.test" <rastreio@carrier.test>'
    parties = OrderParties(CUSTOMER, STORE)
    first = decide_route(
        CUSTOMER, parties, "rastreio@carrier.test", header_from, None, domain=DOMAIN
    )

    assert first == NeedsReverseAlias("rastreio@carrier.test", None)


def test_too_many_header_fields_are_rejected_with_a_permanent_reply() -> None:
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_FIELDS + 1)) + b"\r\nbody"
    route = route_for(CUSTOMER, "sac@lojabonita.test", None)

    with pytest.raises(MessageRejected) as caught:
        rewrite_for_forward(raw, route, PARTIES, domain=DOMAIN)

    assert caught.value.code == 554
    assert caught.value.text.startswith("554 5.6.0 ")


def test_summary_of_a_plain_text_mail_with_an_attachment() -> None:
    text = "Olá Maria,\n\n  seu pedido saiu para entrega " + "e chega amanhã " * 20
    raw = make_mail(text=text + "\n> citação antiga\n")

    summary = summarize(raw)

    assert summary.message_id == "<abc.1001@mail.lojabonita.test>"
    assert summary.subject == "Seu pedido 1001 foi enviado"
    assert summary.first_words.startswith("Olá Maria, seu pedido saiu para entrega e chega")
    assert summary.first_words.endswith("…")
    assert len(summary.first_words) <= 150
    full = " ".join(text.split())
    kept = summary.first_words.removesuffix("…")
    assert full.startswith(kept + " ")  # cut between words, never inside one
    assert summary.attachment_names == ("nota-fiscal.pdf",)
    assert summary.size_bytes == len(raw)


def test_summary_of_an_html_only_mail_is_its_visible_text() -> None:
    html = (
        "<html><head><style>p { color: red }</style><title>x</title></head>"
        "<body><p>Seu pedido&nbsp;foi <b>enviado</b>.</p><script>alert(1)</script>"
        "<p>Rastreio: BR123</p></body></html>"
    )
    summary = summarize(make_mail(html=html, attachment=None))

    assert summary.first_words == "Seu pedido foi enviado. Rastreio: BR123"
    assert summary.attachment_names == ()


def test_summary_decodes_latin1_bodies_and_encoded_word_file_names() -> None:
    raw = (
        b"Subject: Nota\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; name=notes.txt\r\n"
        b"Content-Disposition: attachment\r\n\r\nnot the body\r\n"
        b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nOl=E1, a nota est=E1 anexa.\r\n"
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b' filename="=?utf-8?q?nota_fiscal_n=C2=BA_7.pdf?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
    )
    summary = summarize(raw)

    assert summary.first_words == "Olá, a nota está anexa."
    assert summary.attachment_names == ("notes.txt", "nota fiscal nº 7.pdf")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; "
        b"charset=nonexistent\r\n\r\n\xe9t\xe9\r\n--x\r\nContent-Type: application/pdf; "
        b'name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@not base64',
        b"Content-Type: multipart/alternative\r\nSubject: =?bogus?q?x?=\r\n\r\nno boundary",
    ],
)
def test_summary_of_malformed_mime_never_raises(raw: bytes) -> None:
    summary = summarize(raw)

    assert summary.size_bytes == len(raw)
    assert isinstance(summary.first_words, str)


def test_forward_event_id_is_the_same_on_every_retry_and_differs_per_recipient() -> None:
    raw = make_mail()
    key = message_key(raw, "<abc.1001@mail.lojabonita.test>")

    assert forward_event_id(key, CUSTOMER.address) == forward_event_id(key, CUSTOMER.address)
    assert forward_event_id(key, CUSTOMER.address) != forward_event_id(key, STORE.address)
    assert message_key(raw, None) == message_key(raw, "  ")
    assert message_key(raw, None).startswith("sha256:")
    assert message_key(raw, None) != message_key(raw + b"x", None)
