"""Turn a rendered notification into an RFC 5322 message, immune to header injection."""

from __future__ import annotations

import hashlib
import unicodedata
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from typing import Final

from worker.domain.templates import RenderedEmail
from worker.events import OrderStatusChanged

ELLIPSIS: Final = "…"
# Cc covers CR, LF, TAB, NUL and DEL; Zl/Zp are U+2028/U+2029, which some clients treat as breaks.
_BREAKING_CATEGORIES: Final = frozenset({"Cc", "Zl", "Zp"})


class UnsafeHeader(ValueError):
    """An address that would change the message's header structure if used."""


def message_id_for(event_id: str, domain: str) -> str:
    """Deterministic, so a retried send of the same event carries the same Message-ID."""
    digest = hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:32]
    return f"<ct-{digest}@{domain}>"


def sanitize_header_text(text: str) -> str:
    """Replace line breaks and other control characters with spaces and collapse whitespace.

    Names and subjects come from the OMS: a stray newline in them is far likelier to be bad data
    than an attack, and either way the customer should still get the email, minus the newline.
    """
    cleaned = "".join(
        " " if unicodedata.category(char) in _BREAKING_CATEGORIES else char for char in text
    )
    return " ".join(cleaned.split())


def compose_notification(
    rendered: RenderedEmail,
    *,
    event: OrderStatusChanged,
    store_alias: str,
    customer_alias: str,
    domain: str,
) -> EmailMessage:
    """The message the store (through its alias) sends the customer (at their alias)."""
    store = _address(event.store.name, store_alias)
    customer_name = f"{event.customer.first_name} {event.customer.last_name}"
    message = EmailMessage(policy=SMTP)
    message["From"] = store
    message["To"] = _address(customer_name, customer_alias)
    message["Reply-To"] = store
    message["Subject"] = sanitize_header_text(rendered.subject)
    message["Date"] = event.occurred_at
    message["Message-ID"] = message_id_for(event.event_id, domain)
    # RFC 3834: vacation responders must not answer, or they would write into the conversation.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    # After the parts exist: set earlier, set_content would move this Content-* header into them.
    message["Content-Language"] = rendered.locale
    return message


def _address(display_name: str, addr_spec: str) -> Address:
    if any(unicodedata.category(char) in _BREAKING_CATEGORIES for char in addr_spec):
        raise UnsafeHeader("an alias address contains a control character")
    try:
        return Address(display_name=sanitize_header_text(display_name), addr_spec=addr_spec)
    except (ValueError, IndexError, MessageError) as exc:
        raise UnsafeHeader(f"{addr_spec!r} is not a single plain address: {exc}") from None


def first_words(text: str, limit: int = 150) -> str:
    """A preview of `text`: whitespace collapsed, cut at a word boundary, at most `limit` chars.

    The ellipsis counts towards `limit`, so the result always fits a field of that size.
    """
    if limit < 2:
        raise ValueError("a preview needs room for at least one character and the ellipsis")
    collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    room = limit - len(ELLIPSIS)
    head = collapsed[: room + 1]
    boundary = head.rfind(" ")
    # One word longer than the limit (a URL, say) is cut mid-word rather than dropped.
    cut = head[:boundary] if boundary > 0 else head[:room]
    return cut.rstrip() + ELLIPSIS
