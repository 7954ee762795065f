"""Building the outgoing notification: headers, structure, and no header injection."""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest

from worker.domain.compose import (
    UnsafeHeader,
    compose_notification,
    first_words,
    message_id_for,
    sanitize_header_text,
)
from worker.domain.templates import RenderedEmail
from worker.events import OrderStatusChanged

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


def compose(
    event: OrderStatusChanged | None = None, rendered: RenderedEmail = RENDERED
) -> EmailMessage:
    return compose_notification(
        rendered,
        event=event or make_event(),
        store_alias=STORE_ALIAS,
        customer_alias=CUSTOMER_ALIAS,
        domain=DOMAIN,
    )


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_headers_are_exactly_the_masked_participants() -> None:
    message = reparse(compose())
    assert message["From"] == f"Acme Shop <{STORE_ALIAS}>"
    assert message["To"] == f"John Doe <{CUSTOMER_ALIAS}>"
    assert message["Reply-To"] == f"Acme Shop <{STORE_ALIAS}>"
    assert message["Subject"] == RENDERED.subject
    assert message["Date"] == "Sun, 05 Jan 2025 14:30:00 +0000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Content-Language"] == "en"
    assert message.get_all("Bcc") is None
    assert message.get_all("Cc") is None


def test_message_id_is_derived_from_the_event_id() -> None:
    digest = hashlib.sha256(b"evt-1").hexdigest()[:32]
    assert message_id_for("evt-1", DOMAIN) == f"<ct-{digest}@ct.example.com>"
    assert compose()["Message-ID"] == message_id_for("evt-1", DOMAIN)
    assert compose()["Message-ID"] == compose()["Message-ID"]
    assert message_id_for("evt-2", DOMAIN) != message_id_for("evt-1", DOMAIN)


def test_body_is_multipart_alternative_text_then_html() -> None:
    message = reparse(compose())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert isinstance(parts[0], EmailMessage)
    assert isinstance(parts[1], EmailMessage)
    # On the wire every line ends in CRLF; the content is otherwise what was rendered.
    assert parts[0].get_content().replace("\r\n", "\n") == RENDERED.text
    assert parts[1].get_content().strip() == RENDERED.html


def test_serialized_lines_end_in_crlf() -> None:
    raw = compose().as_bytes()
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_non_ascii_names_are_encoded_words() -> None:
    event = make_event(first_name="João", store_name="Loja Ação")
    raw = compose(event).as_bytes()
    raw.decode("ascii")  # the headers and bodies are 7-bit clean for any relay
    assert reparse(compose(event))["To"] == f"João Doe <{CUSTOMER_ALIAS}>"
    assert reparse(compose(event))["From"] == f"Loja Ação <{STORE_ALIAS}>"


def test_crlf_in_a_first_name_cannot_add_a_bcc() -> None:
    message = compose(make_event(first_name="Eve\r\nBcc: attacker@evil.test"))
    raw = message.as_bytes()
    assert not any(line.lower().startswith(b"bcc:") for line in raw.split(b"\r\n"))
    parsed = reparse(message)
    assert parsed.get_all("Bcc") is None
    assert parsed["To"].addresses[0].addr_spec == CUSTOMER_ALIAS
    assert len(parsed["To"].addresses) == 1


def test_control_characters_in_subject_and_store_name_become_spaces() -> None:
    rendered = RenderedEmail(
        subject="Order\nBcc: attacker@evil.test", text="x", html="<p>x</p>", locale="en"
    )
    message = compose(make_event(store_name="Acme\x00\u2028Shop\rX-Evil: 1"), rendered)
    raw = message.as_bytes()
    lines = raw.split(b"\r\n")
    assert not any(line.lower().startswith((b"bcc:", b"x-evil:")) for line in lines)
    parsed = reparse(message)
    assert parsed["Subject"] == "Order Bcc: attacker@evil.test"
    assert parsed["From"].addresses[0].display_name == "Acme Shop X-Evil: 1"


@pytest.mark.parametrize(
    "alias", [f"{CUSTOMER_ALIAS}\r\nBcc: attacker@evil.test", "a@b.test\x00", "a@b@c", ""]
)
def test_addresses_with_control_characters_or_bad_syntax_are_refused(alias: str) -> None:
    with pytest.raises(UnsafeHeader):
        compose_notification(
            RENDERED,
            event=make_event(),
            store_alias=STORE_ALIAS,
            customer_alias=alias,
            domain=DOMAIN,
        )


def test_sanitize_header_text_collapses_whitespace() -> None:
    assert sanitize_header_text("  a\t\tb\r\n\r\nc \x7f d  ") == "a b c d"


def test_first_words_returns_short_text_whole_but_collapsed() -> None:
    assert first_words("  Hello\n\n  world  ") == "Hello world"


def test_first_words_cuts_at_a_word_boundary_within_the_limit() -> None:
    text = "The quick brown fox jumps over the lazy dog"
    preview = first_words(text, limit=20)
    assert preview == "The quick brown fox…"
    assert len(preview) <= 20


def test_first_words_keeps_a_word_that_ends_exactly_at_the_limit() -> None:
    assert first_words("abcd efgh ijkl", limit=10) == "abcd efgh…"


def test_first_words_cuts_a_single_overlong_word() -> None:
    preview = first_words("x" * 500, limit=150)
    assert preview == "x" * 149 + "…"


def test_first_words_default_limit_is_150() -> None:
    preview = first_words("word " * 100)
    assert len(preview) <= 150
    assert preview.endswith("word…")
