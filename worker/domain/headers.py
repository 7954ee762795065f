"""A message's header block, read without the email package: fields by name, encoded words decoded.

The relay reads the same few fields of every message; this keeps the reading linear and bounded
(at most `MAX_HEADER_FIELDS` fields) and independent of the email package's parser.
"""

from __future__ import annotations

import re
from email.errors import MessageError
from email.header import decode_header, make_header
from typing import Final

from worker.domain.replies import TOO_MANY_HEADERS, MessageRejected

_FIELD_NAME: Final = re.compile(rb"([!-9;-~]+)[ \t]*:")


def decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (MessageError, LookupError, UnicodeError, ValueError):
        return text


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
        # A bare CR inside a field would end the line for some readers: never pass one on.
        line = line.replace(b"\r", b" ")
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


def read_header(raw: bytes, name: str) -> str | None:
    """The first `name` field's unfolded value, e.g. the From to pass to `decide_route`."""
    fields, _ = split_fields(raw, max_fields=None)
    return next((f.text() for f in fields if f.key == name.lower()), None)


def read_headers(raw: bytes, name: str) -> list[str]:
    """Every `name` field's unfolded value, top first (DKIM-Signature, List-Id, ...)."""
    fields, _ = split_fields(raw, max_fields=None)
    return [f.text() for f in fields if f.key == name.lower()]
