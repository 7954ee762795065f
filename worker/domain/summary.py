"""What the timeline keeps of a forwarded message: its digest, subject, first words, attachments."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Final

from worker.domain.headers import decode_words, split_fields
from worker.domain.text import first_words

_HIDDEN_ELEMENT: Final = re.compile(r"<(script|style|title)\b", re.IGNORECASE)


# The name cannot give characters back to the rest of the tag, which keeps matching linear.
_TAG: Final = re.compile(r"<\s*/?\s*([a-z0-9]*)(?:[^<>a-z0-9][^<>]*)?>", re.IGNORECASE)


_INLINE: Final = frozenset({"a", "b", "i", "u", "em", "strong", "span", "font", "small"})


@dataclass(frozen=True, slots=True)
class MessageSummary:
    message_id: str | None
    subject: str
    first_words: str
    attachment_names: tuple[str, ...]
    size_bytes: int


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def summarize(
    raw: bytes, *, limit: int = 150, mask: Callable[[str], str] | None = None
) -> MessageSummary:
    """What the timeline shows of a message; best effort, never raises on malformed input.

    `mask` replaces real addresses in the first words (a base64 body is decoded only here).
    """
    fields, _ = split_fields(raw, max_fields=None)
    subject = next((f.text() for f in fields if f.key == "subject"), "")
    message_id = next((f.text() for f in fields if f.key == "message-id"), None)
    preview, names = _body_summary(raw, limit)
    if mask is not None:
        preview = first_words(mask(preview), limit)
    return MessageSummary(
        message_id=message_id or None,
        subject=first_words(decode_words(subject), 500),
        first_words=preview,
        attachment_names=names,
        size_bytes=len(raw),
    )


def _body_summary(raw: bytes, limit: int) -> tuple[str, tuple[str, ...]]:
    # compat32 rather than policy.default: the header registry builds a class per header read,
    # which made this summary a sixth of the relay's CPU; nothing here needs parsed headers.
    try:
        message = BytesParser(policy=policy.compat32).parsebytes(raw)
        names = tuple(
            " ".join(decode_words(name).split())
            for part in message.walk()
            # A part with a Content-ID is an image the HTML embeds, not something sent along.
            if (name := part.get_filename()) and part.get("content-id") is None
        )
        return first_words(_body_text(message), limit), names
    except Exception:  # noqa: BLE001 - the stdlib parser raises many types on hostile MIME
        return "", ()


def _body_text(message: Message) -> str:
    part = _body_part(message)
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "us-ascii")
    except (LookupError, UnicodeError):  # an unknown or lying charset
        text = payload.decode("utf-8", "replace")
    text = text[:500_000]  # the preview needs the start; a huge body needs no more work
    if part.get_content_subtype() == "html":
        text = _visible_text(text)
    # Quoted earlier mail is not what this message says.
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def _body_part(message: Message) -> Message | None:
    """The part a reader shows as the body: the first inline text/plain, else text/html."""
    inline = [
        part
        for part in message.walk()
        if part.get_content_maintype() == "text"
        and part.get_content_disposition() != "attachment"
        and part.get_filename() is None
    ]
    for subtype in ("plain", "html"):
        found = next((p for p in inline if p.get_content_subtype() == subtype), None)
        if found is not None:
            return found
    return None


def _visible_text(markup: str) -> str:
    """What a reader sees of an HTML body, in time linear in its size whatever the markup."""
    parts, pos = [], 0
    while hidden := _HIDDEN_ELEMENT.search(markup, pos):
        parts.append(markup[pos : hidden.start()])
        close = re.compile(rf"</{hidden.group(1)}", re.IGNORECASE).search(markup, hidden.end())
        pos = close.start() if close else len(markup)  # unclosed: a browser hides the rest too
    parts.append(markup[pos:])
    text = _TAG.sub(lambda m: "" if m.group(1).lower() in _INLINE else " ", "".join(parts))
    return html.unescape(text)
