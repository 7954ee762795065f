"""Building the outgoing notification: headers, structure, and no header injection.

`compose_notification` builds the message with the standard library's compat32 API and
serialises it for SMTP DATA; the tests parse it back with the modern parser.
"""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import compat32, default
from typing import Any

import pytest

from tests.support.events import order_event
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.domain.compose import (
    ComposedEmail,
    UnsafeHeader,
    compose_notification,
    message_id_for,
    sanitize_header_text,
)
from worker.domain.templates import RenderedEmail, TemplateRenderer

DOMAIN = "ct.example.com"
STORE_ALIAS = "shop@acme.test-207700027841b.ct.example.com"
CUSTOMER_ALIAS = "ff2e6348a53a4d449af92be2a1011328@ct.example.com"
RENDERED = RenderedEmail(
    subject="Acme Shop: order ORD-1001 is on its way",
    text="Hi John,\n\nYour order shipped.\n",
    html="<p>Hi John,</p><p>Your order shipped.</p>",
    locale="en",
)


def make_event(first_name: str = "John", store_name: str = "Acme Shop") -> OrderStatusChanged:
    fields: dict[str, Any] = {
        "eventId": "evt-1",
        "orderId": "ORD-1001",
        "storeId": "store-1",
        "occurredAt": datetime(2025, 1, 5, 14, 30, tzinfo=UTC),
        "status": "SHIPPED",
        "customer": {"email": "johndoe@example.com", "firstName": first_name, "lastName": "Doe"},
        "store": {"name": store_name, "email": "shop@acme.test"},
    }
    return OrderStatusChanged.model_validate(fields)


def compose_bytes(
    event: OrderStatusChanged | None = None,
    rendered: RenderedEmail = RENDERED,
    *,
    customer_alias: str = CUSTOMER_ALIAS,
) -> ComposedEmail:
    return compose_notification(
        rendered,
        event=event or make_event(),
        store_alias=STORE_ALIAS,
        customer_alias=customer_alias,
        domain=DOMAIN,
    )


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def raw_of(event: OrderStatusChanged, rendered: RenderedEmail, customer_alias: str) -> bytes:
    return compose_bytes(event, rendered, customer_alias=customer_alias).raw


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_message_id_is_derived_from_the_event_id() -> None:
    digest = hashlib.sha256(b"evt-1").hexdigest()[:32]
    assert message_id_for("evt-1", DOMAIN) == f"<ct-{digest}@ct.example.com>"
    assert compose_bytes().message_id == message_id_for("evt-1", DOMAIN)
    assert compose_bytes().message_id == compose_bytes().message_id
    assert message_id_for("evt-2", DOMAIN) != message_id_for("evt-1", DOMAIN)


def test_non_ascii_names_are_encoded_words() -> None:
    raw = raw_of(make_event(first_name="João", store_name="Loja Ação"), RENDERED, CUSTOMER_ALIAS)
    raw.decode("ascii")  # the headers and bodies are 7-bit clean for any relay
    assert parse(raw)["To"] == f"João Doe <{CUSTOMER_ALIAS}>"
    assert parse(raw)["From"] == f"Loja Ação <{STORE_ALIAS}>"


def test_crlf_in_a_first_name_cannot_add_a_bcc() -> None:
    event = make_event(first_name="Eve\r\nBcc: attacker@evil.test")
    raw = raw_of(event, RENDERED, CUSTOMER_ALIAS)
    assert not any(line.lower().startswith(b"bcc:") for line in raw.split(b"\r\n"))
    parsed = parse(raw)
    assert parsed.get_all("Bcc") is None
    assert parsed["To"].addresses[0].addr_spec == CUSTOMER_ALIAS
    assert len(parsed["To"].addresses) == 1


@pytest.mark.parametrize(
    "brk", ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x00", "\x00\u2028\r"]
)
def test_line_breaks_and_control_characters_in_subject_and_names_become_spaces(brk: str) -> None:
    rendered = RenderedEmail(
        subject=f"Order{brk}Bcc: attacker@evil.test", text="x", html="<p>x</p>", locale="en"
    )
    event = make_event(first_name=f"Eve{brk}Cc: a@evil.test", store_name=f"Acme{brk}X-Evil: 1")
    raw = raw_of(event, rendered, CUSTOMER_ALIAS)
    names = [line.split(b":")[0].lower() for line in header_lines(raw) if line[:1] not in b" \t"]
    assert not {b"bcc", b"cc", b"x-evil"} & set(names)
    parsed = parse(raw)
    assert parsed["Subject"] == "Order Bcc: attacker@evil.test"
    assert parsed["From"].addresses[0].display_name == "Acme X-Evil: 1"
    assert [a.addr_spec for a in parsed["To"].addresses] == [CUSTOMER_ALIAS]
    assert parsed["To"].addresses[0].display_name == "Eve Cc: a@evil.test Doe"


@pytest.mark.parametrize(
    "alias",
    [
        f"{CUSTOMER_ALIAS}\r\nBcc: attacker@evil.test",
        f"{CUSTOMER_ALIAS}\u2028",
        "a@b.test\x00",
        "a@b@c",
        "",
        "a@b.test, c@evil.test",
        "Eve <a@b.test>",
        "a@b.test>",
        # No alias has these shapes; refusing them keeps the legacy API's headers simple and safe.
        '"a b"@b.test',
        "joão@b.test",
        "a@[192.0.2.1]",
        "a..b@b.test",
        "a" * 250 + "@b.test",
    ],
)
def test_an_alias_that_is_not_one_plain_ascii_dot_atom_address_is_refused(alias: str) -> None:
    with pytest.raises(UnsafeHeader):
        compose_bytes(customer_alias=alias)
    with pytest.raises(UnsafeHeader):
        compose_notification(
            RENDERED,
            event=make_event(),
            store_alias=alias,
            customer_alias=CUSTOMER_ALIAS,
            domain=DOMAIN,
        )


LONG_NAMES = [
    "João Ñandú",
    'Jo "JJ" O\'Neil, Jr.',
    'Loja <Ação>, "Ltda"',
    "Shop <admin@evil.test>",
    "back\\slash",
    "=?utf-8?q?Free_money?=",
    'Very, long "store" <name> with, commas ' * 5,
]
SUBJECTS = [
    "Acme Shop: seu pedido ORD-1001 está a caminho",
    'Acme Shop: order ORD-1001, the one with "quotes" <and> brackets; shipped',
    ("Your order is on its way " * 20).strip(),
    ("Seu pedido está a caminho " * 20).strip(),
    "x" * 1200,
    "ç" * 600,
    "=?utf-8?q?Free_money?=",
    "",
]


def test_headers_are_exactly_the_masked_participants() -> None:
    composed = compose_bytes()
    message = parse(composed.raw)
    assert message["From"] == f"Acme Shop <{STORE_ALIAS}>"
    assert message["To"] == f"John Doe <{CUSTOMER_ALIAS}>"
    assert message["Reply-To"] == f"Acme Shop <{STORE_ALIAS}>"
    assert message["Subject"] == RENDERED.subject
    assert message["Date"] == "Sun, 05 Jan 2025 14:30:00 +0000"
    assert message["Message-ID"] == composed.message_id == message_id_for("evt-1", DOMAIN)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert message["Content-Language"] == "en"
    assert message.get_all("Bcc") is None
    assert message.get_all("Cc") is None
    assert compose_bytes().message_id == composed.message_id  # a retry carries the same id


@pytest.mark.parametrize("status", [s for s in OrderStatus if s is not OrderStatus.UNKNOWN])
@pytest.mark.parametrize("locale", ["en", "pt-BR"])
def test_parts_are_text_then_html_and_decode_to_exactly_what_was_rendered(
    status: OrderStatus, locale: str
) -> None:
    event = order_event("ORD-1", status, locale=locale, first_name="João Ñandú")
    rendered = TemplateRenderer(None).render(event)
    message = parse(compose_bytes(event, rendered).raw)
    assert message.get_content_type() == "multipart/alternative"
    assert message["Content-Language"] == locale
    text, html = message.iter_parts()
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    for part, subtype in ((text, "plain"), (html, "html")):
        assert part.get_content_type() == f"text/{subtype}"
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get("MIME-Version") is None
    # On the wire every line break is CRLF; otherwise the bodies are exactly what was rendered.
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content().replace("\r\n", "\n") == rendered.html


def test_body_lines_starting_with_from_are_not_mangled() -> None:
    rendered = RenderedEmail(
        subject="s", text="From the store:\nhello\n", html="From <b>us</b>", locale="en"
    )
    text, html = parse(compose_bytes(rendered=rendered).raw).iter_parts()
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content() == rendered.html


def test_output_is_7bit_crlf_with_no_line_over_998_octets() -> None:
    rendered = RenderedEmail(
        subject="ç" * 600,
        text=("é" * 5000) + "\n" + ("x" * 5000) + "\n\n  trailing spaces  \n",
        html="<p>" + "ã" * 5000 + "</p>",
        locale="pt-BR",
    )
    event = make_event(first_name="Ñ" * 256, store_name="Loja " * 50)
    raw = compose_bytes(event, rendered).raw
    raw.decode("ascii")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert max(len(line) for line in header_lines(raw)) <= 78
    text, html = parse(raw).iter_parts()
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert text.get_content().replace("\r\n", "\n") == rendered.text
    assert html.get_content() == rendered.html


@pytest.mark.parametrize("subject", SUBJECTS)
def test_subjects_round_trip_folded_within_78_characters(subject: str) -> None:
    rendered = RenderedEmail(subject=subject, text="x", html="<p>x</p>", locale="pt-BR")
    raw = compose_bytes(rendered=rendered).raw
    assert parse(raw)["Subject"] == subject
    assert max(len(line) for line in header_lines(raw)) <= 78


@pytest.mark.parametrize("name", LONG_NAMES)
def test_names_round_trip_quoted_or_encoded(name: str) -> None:
    raw = compose_bytes(make_event(first_name=name, store_name=name)).raw
    message = parse(raw)
    customer_name = sanitize_header_text(f"{name} Doe")
    for header, display_name, addr_spec in (
        ("From", name.strip(), STORE_ALIAS),
        ("Reply-To", name.strip(), STORE_ALIAS),
        ("To", customer_name, CUSTOMER_ALIAS),
    ):
        [address] = message[header].addresses
        assert (address.display_name, address.addr_spec) == (display_name, addr_spec)
    assert max(len(line) for line in header_lines(raw)) <= 78


@pytest.mark.parametrize("name", ["João Ñandú " * 12, "Ñ" * 256, "a" * 200])
def test_long_names_become_several_encoded_words(name: str) -> None:
    """RFC 2047 readers join adjacent encoded words; Python's address parser puts a space between
    them (it handles them right only in unstructured headers), so read the name with the RFC 2047
    decoder instead."""
    raw = compose_bytes(make_event(first_name=name)).raw
    [address] = parse(raw)["To"].addresses
    assert address.addr_spec == CUSTOMER_ALIAS
    to = email.message_from_bytes(raw, policy=compat32)["To"]
    assert "\r\n " in to  # folded
    decoded = str(make_header(decode_header(to.replace("\r\n", ""))))
    assert decoded == f"{sanitize_header_text(name)} Doe <{CUSTOMER_ALIAS}>"
    assert max(len(line) for line in header_lines(raw)) <= 78


def test_sanitize_header_text_collapses_whitespace() -> None:
    assert sanitize_header_text("  a\t\tb\r\n\r\nc \x7f d  ") == "a b c d"
