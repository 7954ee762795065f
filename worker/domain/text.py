"""Text shown in place of a whole message: previews cut at a word boundary."""

from __future__ import annotations

from typing import Final

ELLIPSIS: Final = "…"


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
