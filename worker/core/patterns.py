"""Regular expressions over attacker input in time linear in its length: RE2 (google-re2).

Python's `re` backtracks: a pattern like `[chars]+@domain` run over a megabyte of address
characters with no `@` retries from every position, which is quadratic (a bounce's 2 MB
`Diagnostic-Code` froze the relay for seconds). RE2 runs a finite automaton instead and is
linear whatever the input, at the price of no lookaround and no backreferences; patterns written
for it say what they mean with groups instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information


class LinearMatch(Protocol):
    def group(self, index: int = 0, /) -> str: ...


Replacement = str | Callable[[LinearMatch], str]


class LinearPattern:
    """One RE2 pattern; `sub` and `search` as in `re`, linear in the text's length."""

    def __init__(self, pattern: str, *, ignore_case: bool = False) -> None:
        options = re2.Options()
        options.case_sensitive = not ignore_case
        options.max_mem = 64 << 20  # large alternations (many private terms) fit
        self._compiled = re2.compile(pattern, options)

    def sub(self, replacement: Replacement, text: str) -> str:
        return cast(str, self._compiled.sub(replacement, text))

    def search(self, text: str) -> LinearMatch | None:
        return cast(LinearMatch | None, self._compiled.search(text))
