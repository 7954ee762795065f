"""A stored message as support staff read it: headers, text, sanitised HTML, attachments.

Every byte here came from outside. The HTML goes through nh3 (the Ammonia sanitiser): no script,
no event handler, no `javascript:` link, no style, and no remote image, since loading one tells
its sender that, when and from where the message was read. Images the message carries itself
(`cid:` parts) are shown through the console's own attachment URLs.
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Final

import nh3

SAFE_DOWNLOAD_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
     "text/csv"}
)  # fmt: skip
URL_SCHEMES: Final = frozenset({"http", "https", "mailto", "tel", "cid"})
MAX_FILENAME: Final = 150
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size_bytes: int
    content_id: str | None


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    filename: str
    content_type: str  # what the console may serve it as: a safe type or octet-stream
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageView:
    subject: str
    sender: str
    to: str
    cc: str
    date: str
    text: str | None
    html: str | None  # sanitised
    attachments: tuple[Attachment, ...]
    blocked_images: int = 0
    notes: tuple[str, ...] = field(default=())


def _parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def _header(message: Message, name: str) -> str:
    try:
        return " ".join(str(message.get(name, "")).split())
    except Exception:  # noqa: BLE001 - a malformed header must not hide the rest of the message
        return ""


def _leaves(message: Message) -> list[Message]:
    return [part for part in message.walk() if not part.is_multipart()]


def _is_body(part: Message) -> bool:
    return (
        part.get_content_type() in ("text/plain", "text/html")
        and part.get_content_disposition() != "attachment"
        and part.get_filename() is None
    )


def _attachment_parts(message: Message) -> list[Message]:
    """Everything that is not the text or HTML body, in MIME order: the indexes downloads use."""
    return [part for part in _leaves(message) if not _is_body(part)]


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        return payload.decode(part.get_content_charset() or "us-ascii")
    except (LookupError, UnicodeError):  # an unknown or lying charset
        return payload.decode("utf-8", "replace")


def safe_filename(name: str | None, index: int) -> str:
    """A name that is safe in a download dialog and a Content-Disposition header."""
    text = unicodedata.normalize("NFC", name or "")
    text = _UNSAFE_FILENAME.sub("_", text).strip(" ._")
    return text[:MAX_FILENAME] or f"attachment-{index + 1}"


def download_type(content_type: str) -> str:
    """Serve as declared only types a browser will not run as a page of ours."""
    return content_type if content_type in SAFE_DOWNLOAD_TYPES else "application/octet-stream"


def sanitize_html(markup: str, cid_url: Callable[[str], str | None]) -> tuple[str, int]:
    """nh3-clean `markup`; returns it and how many remote (or unknown) images were dropped."""
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src":
            url = cid_url(value[4:].strip("<> ")) if value.lower().startswith("cid:") else None
            if url is None:
                blocked += 1
            return url
        return value

    cleaned = nh3.clean(
        markup,
        url_schemes=set(URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        attribute_filter=keep,
    )
    return cleaned, blocked


def view_message(raw: bytes, attachment_url: Callable[[int], str]) -> MessageView:
    """Parse `raw` for display; never raises on malformed input, it shows what it can."""
    notes: list[str] = []
    try:
        message = _parse(raw)
        leaves = _leaves(message)
    except Exception:  # noqa: BLE001 - the stdlib parser raises many types on hostile MIME
        return MessageView("", "", "", "", "", raw.decode("utf-8", "replace"), None, (), 0,
                           ("The message could not be parsed; shown as raw text.",))  # fmt: skip
    bodies = [part for part in leaves if _is_body(part)]
    plain = next((p for p in bodies if p.get_content_subtype() == "plain"), None)
    html_part = next((p for p in bodies if p.get_content_subtype() == "html"), None)
    attachments = []
    by_cid: dict[str, int] = {}
    for index, part in enumerate(_attachment_parts(message)):
        content_id = (part.get("content-id") or "").strip().strip("<>") or None
        payload = part.get_payload(decode=True)
        attachments.append(
            Attachment(
                index=index,
                filename=safe_filename(part.get_filename(), index),
                content_type=part.get_content_type(),
                size_bytes=len(payload) if isinstance(payload, bytes) else 0,
                content_id=content_id,
            )
        )
        if content_id:
            by_cid[content_id] = index
    html = None
    blocked = 0
    if html_part is not None:

        def cid_url(content_id: str) -> str | None:
            index = by_cid.get(content_id)
            return attachment_url(index) if index is not None else None

        html, blocked = sanitize_html(_text_of(html_part), cid_url)
    if blocked:
        notes.append(f"{blocked} remote image(s) blocked: loading them would tell the sender.")
    text = _text_of(plain) if plain is not None else None
    if text is None and html is None and message.defects:
        # A broken structure (a multipart without its boundary, say): show the bytes as text
        # rather than nothing, and say why.
        text = raw.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")
        notes.append("The message is malformed; its body is shown as raw text.")
    return MessageView(
        subject=_header(message, "Subject"),
        sender=_header(message, "From"),
        to=_header(message, "To"),
        cc=_header(message, "Cc"),
        date=_header(message, "Date"),
        text=text,
        html=html,
        attachments=tuple(attachments),
        blocked_images=blocked,
        notes=tuple(notes),
    )


def attachment_file(raw: bytes, index: int) -> AttachmentFile | None:
    """The attachment at `index` of view_message's list, or None when there is none."""
    try:
        parts = _attachment_parts(_parse(raw))
    except Exception:  # noqa: BLE001 - hostile MIME, as above
        return None
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    payload = part.get_payload(decode=True)
    return AttachmentFile(
        filename=safe_filename(part.get_filename(), index),
        content_type=download_type(part.get_content_type()),
        data=payload if isinstance(payload, bytes) else b"",
    )


def plain_text(view: MessageView) -> str:
    """The message's words without markup: its text part, else the sanitised HTML's text."""
    if view.text is not None:
        return view.text
    if view.html is None:
        return ""
    return html_lib.unescape(nh3.clean(view.html, tags=set()))
