"""What the forwarded mail looks like: headers that reveal an origin dropped, addresses masked."""

from __future__ import annotations

import re
from email.header import Header
from email.utils import formataddr, getaddresses
from typing import Final

from worker.domain.headers import Field, decode_words, split_fields
from worker.domain.replies import MAX_HEADER_FIELDS
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


# Identifiers and MIME structure: re-encoding them would break threading or the body's parsing.
_VERBATIM: Final = frozenset({"message-id", "in-reply-to", "references", "date", "mime-version"})


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
    fields, body = split_fields(raw, MAX_HEADER_FIELDS)
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
    return formataddr((safe_name(name) or "", address), charset="utf-8").encode()


def _mask_addresses(text: str, masker: _Masker) -> bytes | None:
    pairs = [(n, masker.alias_for(a)) for n, a in getaddresses([text]) if "@" in a]
    # A non-ASCII address cannot be written without SMTPUTF8, so it goes like an unparseable one.
    pairs = [(name, address) for name, address in pairs if address.isascii()]
    if not pairs:
        # Unparseable but holding an address: drop the field rather than risk passing one on.
        return text.encode() if "@" not in text and text.isascii() else None
    return b",\r\n ".join(_address(decode_words(name), address) for name, address in pairs)


def _unstructured(field: Field, masker: _Masker) -> bytes:
    # Decoded first, so an address hidden in an RFC 2047 encoded word is found too.
    decoded = decode_words(field.text())
    masked = masker.text(decoded)
    if masked == decoded and all(line.isascii() for line in field.lines):
        return field.raw()  # keep the sender's folding and encoded words
    charset = "us-ascii" if masked.isascii() else "utf-8"
    header = Header(masked, charset, header_name=field.name.decode("ascii"))
    return field.name + b": " + header.encode(linesep="\r\n").encode("ascii")
