"""What the forwarded mail looks like: headers that reveal an origin dropped, addresses masked."""

from __future__ import annotations

import base64
import re
from email.errors import MessageError
from email.generator import BytesGenerator
from email.header import Header
from email.parser import BytesParser
from email.policy import compat32
from email.utils import formataddr, getaddresses
from io import BytesIO
from typing import Final

from worker.domain.headers import Field, ParsedMessage, decoded_or_none, without_controls
from worker.domain.routing import OrderParties, Route, safe_name
from worker.domain.summary import sha256_hex

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
# An address list longer than this is dropped rather than parsed (getaddresses is not linear).
_MAX_ADDRESS_LIST: Final = 16 * 1024


# Identifiers and MIME structure: re-encoding them would break threading or the body's parsing.
_VERBATIM: Final = frozenset({"message-id", "in-reply-to", "references", "date", "mime-version"})


def rewrite_for_forward(
    message: ParsedMessage | bytes,
    route: Route,
    parties: OrderParties,
    *,
    domain: str,
    authentication_results: str | None = None,
) -> bytes:
    """The message as the recipient gets it: participants masked in headers and body.

    `authentication_results`: the value of this relay's Authentication-Results, written on top.
    Every received one is dropped (`_DROPPED`), forged ones that claim our authserv-id included,
    so ours is the only one the recipient sees. A field whose value cannot be read or written
    back is dropped, never passed on raw and never a reason to fail (a sender would retry it).
    """
    parsed = ParsedMessage.of(message)
    fields, body, raw = parsed.fields, parsed.body, parsed.raw
    masker = Masker(parties, route)
    out = [
        b"From: " + _address(route.sender_name, route.sender_alias),
        b"Reply-To: " + _address(None, route.sender_alias),
    ]
    if authentication_results:
        out.insert(0, b"Authentication-Results: " + authentication_results.encode("ascii"))
    for field in fields:
        if field.key in _DROPPED or field.key.startswith(_DROPPED_PREFIXES):
            continue
        try:
            kept = _rewritten(field, masker)
        except _UNREADABLE:
            kept = None
        if kept is not None:
            out.append(kept)
    if not any(f.key == "message-id" and f.text() for f in fields):
        out.append(f"Message-ID: <ct-relay-{sha256_hex(raw)[:32]}@{domain}>".encode())
    # A last pass over every field kept, whatever its kind: a real address never goes out; and
    # over the body (text and HTML parts, quoted replies, attached messages' headers).
    content = b"\r\n".join(f.raw() for f in fields if f.key.startswith("content-"))
    try:
        masked_body = masker.body(body, content)
    except _UNREADABLE:
        masked_body = masker.raw(body)  # MIME the parser cannot walk: the text pass at least
    return masker.raw(b"\r\n".join(out)) + b"\r\n\r\n" + masked_body


# What the standard library's header functions raise on values they cannot read or write.
_UNREADABLE: Final = (MessageError, LookupError, UnicodeError, ValueError, TypeError, IndexError)


def _rewritten(field: Field, masker: Masker) -> bytes | None:
    """The field as forwarded, or None to drop it."""
    if field.key in _ADDRESS_FIELDS:
        value = _mask_addresses(field.text(), masker)
        return None if value is None else field.name + b": " + value
    if field.key in _VERBATIM or field.key.startswith("content-"):
        return field.raw()
    return _unstructured(field, masker)


class Masker:
    """Replaces the participants' real addresses with their aliases, in text or in raw bytes."""

    @classmethod
    def of(cls, parties: OrderParties, route: Route) -> Masker:
        return cls(parties, route)

    def __init__(self, parties: OrderParties, route: Route) -> None:
        # The sender's own address first: whatever address an unauthenticated sender claims,
        # it is replaced by the sender's reverse alias, so that what a forward shows never
        # depends on whether the claim was a participant's real address.
        self._aliases: dict[str, str] = {route.sender_real_address.lower(): route.sender_alias}
        for party in parties.all():
            self._aliases.setdefault(party.real_address.lower(), party.address)
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

    def holds_one(self, data: bytes) -> bool:
        """Whether a real address may be in `data`: one case-folded copy, a substring search
        per participant; the pattern runs only where this says yes."""
        lowered = data.lower()
        return any(real.encode() in lowered for real in self._aliases if real)

    def body(self, body: bytes, content_fields: bytes = b"") -> bytes:
        """The body with real addresses replaced: where they are written as text (7bit, 8bit,
        quoted-printable, HTML, attached messages' headers), and inside base64 text parts,
        which are decoded, masked and encoded again. `content_fields`: the message's own
        Content-* fields, which say how a single-part body is encoded."""
        if self.holds_one(body):
            body = self.raw(body)
        if b"base64" in body.lower() or b"base64" in content_fields.lower():
            body = self._base64_parts(content_fields, body)
        return body

    def _base64_parts(self, content_fields: bytes, body: bytes) -> bytes:
        message = BytesParser(policy=compat32).parsebytes(content_fields + b"\r\n" + body)
        changed = False
        for part in message.walk():
            encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
            if part.is_multipart() or encoding != "base64" or part.get_content_maintype() != "text":
                continue
            decoded = part.get_payload(decode=True)
            if isinstance(decoded, bytes) and self.holds_one(decoded):
                encoded = base64.encodebytes(self.raw(decoded)).decode("ascii")
                part.set_payload(encoded.replace("\n", "\r\n"))
                changed = True
        if not changed:
            return body
        out = BytesIO()
        BytesGenerator(out, mangle_from_=False, policy=compat32.clone(linesep="\r\n")).flatten(
            message
        )
        return out.getvalue().partition(b"\r\n\r\n")[2]


def _address(name: str | None, address: str) -> bytes:
    # formataddr RFC 2047-encodes a non-ASCII name; a name's control characters never reach it.
    shown = safe_name(without_controls(name or ""))
    return formataddr((shown or "", without_controls(address)), charset="utf-8").encode()


def _mask_addresses(text: str, masker: Masker) -> bytes | None:
    if len(text) > _MAX_ADDRESS_LIST:
        return None
    pairs = [(n, masker.alias_for(a)) for n, a in getaddresses([text]) if "@" in a]
    # A non-ASCII address cannot be written without SMTPUTF8, so it goes like an unparseable one.
    pairs = [(name, address) for name, address in pairs if address.isascii()]
    if not pairs:
        # Unparseable but holding an address: drop the field rather than risk passing one on.
        return text.encode() if "@" not in text and text.isascii() else None
    # A name that cannot be decoded is left out; the address stays.
    return b",\r\n ".join(_address(decoded_or_none(name), address) for name, address in pairs)


def _unstructured(field: Field, masker: Masker) -> bytes | None:
    # Decoded first, so an address hidden in an RFC 2047 encoded word is found too.
    text = field.text()
    decoded = decoded_or_none(text)
    if decoded is None:
        return None  # an encoded word nobody can read: dropped, never passed on as it came
    masked = masker.text(decoded)
    if masked == text and all(line.isascii() for line in field.lines):
        return field.raw()  # plain ASCII, nothing to mask: keep the sender's folding
    # Anything decoded is written back encoded, from its control-free form: an encoded word
    # that hid a line break cannot become one, here or in the recipient's mail client.
    charset = "us-ascii" if masked.isascii() else "utf-8"
    header = Header(masked, charset, header_name=field.name.decode("ascii"))
    return field.name + b": " + header.encode(linesep="\r\n").encode("ascii")
