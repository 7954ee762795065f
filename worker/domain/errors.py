"""The one exception the domain raises for input that can never succeed as it is."""

from __future__ import annotations


class Unprocessable(Exception):
    """An input no retry can fix (a bad address, a template that cannot render, an unsafe
    header): its consumer dead-letters it with `str(exc)` as the reason and moves on.

    The message must say what is wrong without quoting personal data: it travels in a
    dead-letter header that operators read.
    """
