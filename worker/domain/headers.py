"""A message's header block, read without the email package: fields by name, encoded words decoded.

The relay reads the same few fields of every message; this keeps the reading linear and bounded
(at most `MAX_HEADER_FIELDS` fields) and independent of the email package's parser. The relay
splits a message once, into a `ParsedMessage` that screening, routing and rewriting share.

Decoded text is attacker input: an encoded word may hide CR, LF, NUL or any other control
character. `decode_words` never returns one, so nothing decoded can end a header early, add a
field the relay strips, or smuggle a line into a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from typing import Final

from worker.domain.replies import MAX_HEADER_FIELDS, TOO_MANY_HEADERS, MessageRejected

_FIELD_NAME: Final = re.compile(rb"([!-9;-~]+)[ \t]*:")
# C0 controls (tab included: folding is the writer's job), DEL, C1 controls, and the Unicode
# line and paragraph separators that some readers treat as line breaks.
_CONTROL_BYTES: Final = bytes(
    b if b == 0x09 or 0x20 <= b < 0x7F or b >= 0x80 else 0x20 for b in range(256)
)
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


# What the standard library raises on encoded words it cannot read.
_UNREADABLE: Final = (
    MessageError,
    LookupError,
    UnicodeError,
    ValueError,
    TypeError,
    AttributeError,
)


def without_controls(text: str) -> str:
    """`text` with every run of control characters replaced by one space."""
    return _CONTROL.sub(" ", text)


def decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded; the result never holds a control character.

    Unreadable encoded words stay as the sender wrote them (for reading a name or a subject);
    `decoded_or_none` tells them apart, for what is written back into a forward.
    """
    decoded = decoded_or_none(text)
    return without_controls(text) if decoded is None else decoded


def decoded_or_none(text: str) -> str | None:
    """`text` with its encoded words decoded and control characters removed; None when an
    encoded word cannot be decoded (an unknown charset, bytes the charset has no reading of)."""
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except _UNREADABLE:
            return None
    return without_controls(text)


class Field:
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


def split_fields(raw: bytes, max_fields: int | None) -> tuple[list[Field], bytes]:
    """Header fields and the untouched body bytes, read the way Python's own parser reads them."""
    fields: list[Field] = []
    pos = 0
    if raw.startswith(b"From ") and not _FIELD_NAME.match(raw):  # mbox line: the real sender
        pos = raw.find(b"\n") + 1 or len(raw)
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end == -1 else end + 1
        line = raw[pos:end].removesuffix(b"\n").removesuffix(b"\r")
        if not line:
            return fields, raw[end:]
        # A bare CR inside a field would end the line for some readers, and NUL or ESC has no
        # business in a header: never pass one on (tab stays, it folds and separates).
        line = line.translate(_CONTROL_BYTES)
        if line[:1] in b" \t" and fields:
            fields[-1].lines.append(line)
        elif match := _FIELD_NAME.match(line):
            if max_fields is not None and len(fields) >= max_fields:
                raise MessageRejected(TOO_MANY_HEADERS)
            fields.append(Field(match.group(1), line[match.end() :]))
        else:
            break  # not a field: the body starts here without a blank line
        pos = end
    return fields, raw[pos:]


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One message split once: its header fields in order and its untouched body bytes.

    Raises `MessageRejected` (554 5.6.0) for more than `MAX_HEADER_FIELDS` fields.
    """

    raw: bytes
    fields: tuple[Field, ...]
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> ParsedMessage:
        fields, body = split_fields(raw, MAX_HEADER_FIELDS)
        return cls(raw, tuple(fields), body)

    @classmethod
    def of(cls, message: ParsedMessage | bytes) -> ParsedMessage:
        return message if isinstance(message, ParsedMessage) else cls.parse(message)

    def header(self, name: str) -> str | None:
        """The first `name` field's unfolded value, as received (encoded words not decoded)."""
        key = name.lower()
        return next((f.text() for f in self.fields if f.key == key), None)

    def headers(self, name: str) -> list[str]:
        """Every `name` field's unfolded value, top first (DKIM-Signature, List-Id, ...)."""
        key = name.lower()
        return [f.text() for f in self.fields if f.key == key]


def read_header(raw: bytes, name: str) -> str | None:
    """The first `name` field's unfolded value, e.g. the From to pass to `decide_route`."""
    fields, _ = split_fields(raw, max_fields=None)
    return next((f.text() for f in fields if f.key == name.lower()), None)


def read_headers(raw: bytes, name: str) -> list[str]:
    """Every `name` field's unfolded value, top first (DKIM-Signature, List-Id, ...)."""
    fields, _ = split_fields(raw, max_fields=None)
    return [f.text() for f in fields if f.key == name.lower()]
