"""Relay policy and rewriting: who may write to an alias, and what the forwarded mail looks like.

Pure functions over bytes and values. The relay's I/O layer looks the recipient alias up, calls
`decide_route`, then `rewrite_for_forward` and `summarize`, and turns a `Refusal` or a
`MessageRejected` into the SMTP reply it carries.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from email import policy
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import formataddr, getaddresses, parseaddr
from typing import Final

from worker.contracts.events import Direction, ParticipantRole
from worker.domain.aliases import is_alias_domain
from worker.domain.sender_auth import UNVERIFIED_SENDER_NAME
from worker.domain.text import first_words

# 5xx only where a retry cannot help; anything transient or unexpected is a 4xx, so senders retry.
ONLY_CUSTOMER: Final = "550 5.7.1 Only the customer of this order may write to this address"
ALIAS_EXPIRED: Final = "550 5.1.1 This conversation is closed: this address has expired"
UNKNOWN_ALIAS: Final = "550 5.1.1 No such address"
RELAY_DENIED: Final = "550 5.7.1 Relaying denied"
BOUNCE_NOT_RELAYED: Final = "550 5.7.1 Bounces are not relayed into order conversations"
LOOP_DETECTED: Final = "550 5.4.6 Routing loop detected"
TOO_BIG: Final = "552 5.3.4 Message too big"
TOO_MANY_HEADERS: Final = "554 5.6.0 Too many header fields"
TEMPORARY_FAILURE: Final = "451 4.3.0 Temporary failure, please try again later"
UPSTREAM_UNAVAILABLE: Final = "451 4.4.1 Upstream unavailable, please try again later"

MAX_HEADER_FIELDS: Final = 1000

# Fields that reveal where a message came from, or carry a real address we cannot mask reliably.
_DROPPED: Final = frozenset(
    {
        "received", "x-received", "return-path", "sender", "bcc", "delivered-to", "errors-to",
        "x-originating-ip", "x-sender", "x-authenticated-sender", "x-apparently-to",
        "x-forwarded-for", "x-forwarded-to", "x-envelope-from", "x-envelope-to",
        "dkim-signature", "domainkey-signature", "authentication-results", "received-spf",
        "disposition-notification-to", "return-receipt-to", "x-confirm-reading-to",
        "mail-followup-to", "mail-reply-to", "from", "reply-to",
    }
)  # fmt: skip
_DROPPED_PREFIXES: Final = (
    "x-google-", "x-gm-", "x-ms-exchange-", "x-microsoft-", "arc-", "resent-", "x-original-",
    "x-source",
)  # fmt: skip
_ADDRESS_FIELDS: Final = frozenset({"to", "cc"})
# Identifiers and MIME structure: re-encoding them would break threading or the body's parsing.
_VERBATIM: Final = frozenset({"message-id", "in-reply-to", "references", "date", "mime-version"})
_FIELD_NAME: Final = re.compile(rb"([!-9;-~]+)[ \t]*:")
_HIDDEN_ELEMENT: Final = re.compile(r"<(script|style|title)\b", re.IGNORECASE)
# The name cannot give characters back to the rest of the tag, which keeps matching linear.
_TAG: Final = re.compile(r"<\s*/?\s*([a-z0-9]*)(?:[^<>a-z0-9][^<>]*)?>", re.IGNORECASE)
_INLINE: Final = frozenset({"a", "b", "i", "u", "em", "strong", "span", "font", "small"})


@dataclass(frozen=True, slots=True)
class AliasView:
    address: str
    role: ParticipantRole
    order_id: str
    store_id: str
    real_address: str
    display_name: str | None
    expired: bool


@dataclass(frozen=True, slots=True)
class OrderParties:
    customer: AliasView
    store: AliasView
    externals: tuple[AliasView, ...] = ()

    def all(self) -> tuple[AliasView, ...]:
        return (self.customer, self.store, *self.externals)

    def by_address(self, address: str) -> AliasView | None:
        """The participant this real address or alias belongs to."""
        address = address.strip().lower()
        return next((p for p in self.all() if address in (p.real_address, p.address.lower())), None)


@dataclass(frozen=True, slots=True)
class Route:
    recipient_alias: AliasView
    deliver_to: str
    sender_alias: str
    sender_name: str | None
    sender_role: ParticipantRole
    direction: Direction
    # Lets the rewrite mask a just-created external party that `OrderParties` may not list yet.
    sender_real_address: str


@dataclass(frozen=True, slots=True)
class NeedsReverseAlias:
    """Get-or-create the reverse alias of (order, sender_address), then decide again with it."""

    sender_address: str
    sender_name: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    text: str

    @classmethod
    def of(cls, reply: str) -> Refusal:
        return cls(int(reply[:3]), reply)


class MessageRejected(Exception):
    """The message itself cannot be relayed; `text` is the full SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.code = int(reply[:3])
        self.text = reply


@dataclass(frozen=True, slots=True)
class MessageSummary:
    message_id: str | None
    subject: str
    first_words: str
    attachment_names: tuple[str, ...]
    size_bytes: int


def decide_route(
    recipient: AliasView,
    parties: OrderParties,
    envelope_from: str,
    header_from: str | None,
    reverse_alias_for_sender: AliasView | None,
    *,
    domain: str,
    sender_verified: bool = True,
) -> Route | NeedsReverseAlias | Refusal:
    """Who the mail goes to and whom it appears to come from; `domain` is the alias domain.

    `sender_verified` False (a claim to be a participant that authentication did not confirm,
    see `sender_auth.judge_sender`): the sender is never matched to a participant, so it goes
    out under a reverse alias of its own and the name `UNVERIFIED_SENDER_NAME`.
    """
    if recipient.order_id != parties.customer.order_id:
        raise ValueError("the recipient alias belongs to another order")
    envelope = envelope_from.strip().strip("<>").lower()
    name, from_address = _parse_from(header_from)
    if recipient.expired or not envelope:
        # A null reverse path marks a bounce, and bounces quote the failed message together with
        # its recipient's real address: relaying one would unmask that participant.
        return Refusal.of(ALIAS_EXPIRED if recipient.expired else BOUNCE_NOT_RELAYED)
    if recipient.role is ParticipantRole.EXTERNAL:
        # Both are forgeable; requiring both at least stops a stranger who sets only one of them.
        if envelope == from_address == parties.customer.real_address:
            return _route(recipient, parties.customer, name)
        return Refusal.of(ONLY_CUSTOMER)
    # From identifies the sender before the envelope does: mail sent through a provider carries
    # the provider's bounce address as envelope sender, often a different one per message.
    sender = parties.by_address(from_address) or parties.by_address(envelope)
    address = from_address or envelope
    if not sender_verified:
        sender, name = None, UNVERIFIED_SENDER_NAME
    # An unknown sender under our own domain means one of our forwards came back to us.
    if sender is None and (is_alias_domain(address, domain) or is_alias_domain(envelope, domain)):
        return Refusal.of(LOOP_DETECTED)
    if sender is None:
        sender = reverse_alias_for_sender
        if sender is None:
            return NeedsReverseAlias(address, name)
        if (sender.real_address, sender.order_id) != (address, recipient.order_id):
            raise ValueError("the reverse alias is not this sender's in this order")
    return _route(recipient, sender, name)


def _route(recipient: AliasView, sender: AliasView, header_name: str | None) -> Route:
    # The name the order knows a participant by beats whatever its mail client says.
    name = _safe_name(sender.display_name or header_name)
    direction = Direction(f"TO_{recipient.role.value}")  # the two enums mirror each other
    return Route(
        recipient, recipient.real_address, sender.address, name, sender.role, direction,
        sender.real_address,
    )  # fmt: skip


def _parse_from(header_from: str | None) -> tuple[str | None, str]:
    if not header_from:
        return None, ""
    name, address = parseaddr(header_from)
    address = address.strip().lower()
    return _safe_name(_decode_words(name)), address if "@" in address else ""


def _safe_name(name: str | None) -> str | None:
    """A display name fit for a header; None when it is empty or would show an address."""
    name = " ".join((name or "").split()).strip("\"'")
    return None if not name or "@" in name else name


def _decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (MessageError, LookupError, UnicodeError, ValueError):
        return text


class _Field:
    """One header field as received: its name and physical lines, line endings removed."""

    def __init__(self, name: bytes, first: bytes) -> None:
        self.name = name
        self.key = name.decode("ascii").lower()
        self.lines = [first]

    def raw(self) -> bytes:
        return self.name + b":" + b"\r\n".join(self.lines)

    def text(self) -> str:
        value = b"".join(self.lines).strip()
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")  # never fails: every byte is a latin-1 character


def _split(raw: bytes, max_fields: int | None) -> tuple[list[_Field], bytes]:
    """Header fields and the untouched body bytes, read the way Python's own parser reads them."""
    fields: list[_Field] = []
    pos = 0
    if raw.startswith(b"From ") and not _FIELD_NAME.match(raw):  # mbox line: the real sender
        pos = raw.find(b"\n") + 1 or len(raw)
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end == -1 else end + 1
        line = raw[pos:end].removesuffix(b"\n").removesuffix(b"\r")
        if not line:
            return fields, raw[end:]
        # A bare CR inside a field would end the line for some readers: never pass one on.
        line = line.replace(b"\r", b" ")
        if line[:1] in b" \t" and fields:
            fields[-1].lines.append(line)
        elif match := _FIELD_NAME.match(line):
            if max_fields is not None and len(fields) >= max_fields:
                raise MessageRejected(TOO_MANY_HEADERS)
            fields.append(_Field(match.group(1), line[match.end() :]))
        else:
            break  # not a field: the body starts here without a blank line
        pos = end
    return fields, raw[pos:]


def read_header(raw: bytes, name: str) -> str | None:
    """The first `name` field's unfolded value, e.g. the From to pass to `decide_route`."""
    fields, _ = _split(raw, max_fields=None)
    return next((f.text() for f in fields if f.key == name.lower()), None)


def read_headers(raw: bytes, name: str) -> list[str]:
    """Every `name` field's unfolded value, top first (DKIM-Signature, List-Id, ...)."""
    fields, _ = _split(raw, max_fields=None)
    return [f.text() for f in fields if f.key == name.lower()]


def rewrite_for_forward(
    raw: bytes,
    route: Route,
    parties: OrderParties,
    *,
    domain: str,
    authentication_results: str | None = None,
) -> bytes:
    """The message as the recipient gets it: participants masked, body bytes untouched.

    `authentication_results`: the value of this relay's Authentication-Results, written on top.
    Every received one is dropped (`_DROPPED`), forged ones that claim our authserv-id included,
    so ours is the only one the recipient sees.
    """
    fields, body = _split(raw, MAX_HEADER_FIELDS)
    masker = _Masker(parties, route)
    out = [
        b"From: " + _address(route.sender_name, route.sender_alias),
        b"Reply-To: " + _address(None, route.sender_alias),
    ]
    if authentication_results:
        out.insert(0, b"Authentication-Results: " + authentication_results.encode("ascii"))
    for field in fields:
        if field.key in _DROPPED or field.key.startswith(_DROPPED_PREFIXES):
            continue
        if field.key in _ADDRESS_FIELDS:
            value = _mask_addresses(field.text(), masker)
            if value is not None:
                out.append(field.name + b": " + value)
        elif field.key in _VERBATIM or field.key.startswith("content-"):
            out.append(field.raw())
        else:
            out.append(_unstructured(field, masker))
    if not any(f.key == "message-id" and f.text() for f in fields):
        out.append(f"Message-ID: <ct-relay-{sha256_hex(raw)[:32]}@{domain}>".encode())
    # A last pass over every field kept, whatever its kind: a real address never goes out.
    return masker.raw(b"\r\n".join(out)) + b"\r\n\r\n" + body


class _Masker:
    """Replaces the participants' real addresses with their aliases, in text or in raw bytes."""

    def __init__(self, parties: OrderParties, route: Route) -> None:
        self._aliases: dict[str, str] = {}
        for party in parties.all():
            self._aliases.setdefault(party.real_address.lower(), party.address)
        self._aliases.setdefault(route.sender_real_address.lower(), route.sender_alias)
        alternatives = "|".join(re.escape(real) for real in self._aliases if real) or "(?!)"
        # Not inside a longer address, nor inside a soft alias, which embeds the real address.
        source = rf"(?<![\w.+-])({alternatives})(?![\w-]|\.\w)"
        self._text = re.compile(source, re.IGNORECASE)
        self._bytes = re.compile(source.encode(), re.IGNORECASE)

    def alias_for(self, address: str) -> str:
        return self._aliases.get(address.strip().lower(), address)

    def text(self, value: str) -> str:
        return self._text.sub(lambda m: self.alias_for(m.group(1)), value)

    def raw(self, value: bytes) -> bytes:
        return self._bytes.sub(lambda m: self.alias_for(m.group(1).decode()).encode(), value)


def _address(name: str | None, address: str) -> bytes:
    # formataddr RFC 2047-encodes a non-ASCII name.
    return formataddr((_safe_name(name) or "", address), charset="utf-8").encode()


def _mask_addresses(text: str, masker: _Masker) -> bytes | None:
    pairs = [(n, masker.alias_for(a)) for n, a in getaddresses([text]) if "@" in a]
    # A non-ASCII address cannot be written without SMTPUTF8, so it goes like an unparseable one.
    pairs = [(name, address) for name, address in pairs if address.isascii()]
    if not pairs:
        # Unparseable but holding an address: drop the field rather than risk passing one on.
        return text.encode() if "@" not in text and text.isascii() else None
    return b",\r\n ".join(_address(_decode_words(name), address) for name, address in pairs)


def _unstructured(field: _Field, masker: _Masker) -> bytes:
    # Decoded first, so an address hidden in an RFC 2047 encoded word is found too.
    decoded = _decode_words(field.text())
    masked = masker.text(decoded)
    if masked == decoded and all(line.isascii() for line in field.lines):
        return field.raw()  # keep the sender's folding and encoded words
    charset = "us-ascii" if masked.isascii() else "utf-8"
    header = Header(masked, charset, header_name=field.name.decode("ascii"))
    return field.name + b": " + header.encode(linesep="\r\n").encode("ascii")


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def summarize(raw: bytes, *, limit: int = 150) -> MessageSummary:
    """What the timeline shows of a message; best effort, never raises on malformed input."""
    fields, _ = _split(raw, max_fields=None)
    subject = next((f.text() for f in fields if f.key == "subject"), "")
    message_id = next((f.text() for f in fields if f.key == "message-id"), None)
    preview, names = _body_summary(raw, limit)
    return MessageSummary(
        message_id=message_id or None,
        subject=first_words(_decode_words(subject), 500),
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
            " ".join(_decode_words(name).split())
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
