"""Opaque cursors for keyset pagination: the sort key of the last row shown, nothing else.

A cursor is base64url JSON that the API hands out and takes back; a client cannot page faster
through it than by asking, and a malformed one is a clear 400, never a server error.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


def encode_cursor(at: datetime | None, key: str) -> str:
    body = json.dumps({"at": at.isoformat() if at else None, "key": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime | None, str]:
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        at = datetime.fromisoformat(data["at"]) if data["at"] is not None else None
        key = data["key"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadCursor("the cursor is not one this API gave out; drop it to start again") from None
    if not isinstance(key, str):
        raise BadCursor("the cursor is not one this API gave out; drop it to start again")
    return at, key


def after(at: datetime | None, key: object, time_field: str, key_field: str) -> dict[str, Any]:
    """The filter for rows after (at, key) in (time desc, key desc) order."""
    if at is None:
        return {time_field: None, key_field: {"$lt": key}}
    return {
        "$or": [
            {time_field: {"$lt": at}},
            {time_field: at, key_field: {"$lt": key}},
        ]
    }
