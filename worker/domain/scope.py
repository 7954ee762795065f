"""Which stores a principal may see and act on: every store (a platform operator) or a set.

A user without stores is a platform operator; a user with stores is scoped to them. A token acts
with the intersection of its own stores and its user's, so a token can narrow its user and never
widen it, and an empty intersection sees nothing (it never falls back to "every store").
Values only: the adapters turn a scope into a query filter, the services decide with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

MAX_STORE_ID_CHARS: Final = 256
# Store ids come from the OMS: printable, no spaces, so that lists of them stay readable.
_STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,255}")


class ScopeError(ValueError):
    """A store id or a change of scope that cannot be made; the message says what to change."""


def normalize_store_id(store_id: str) -> str:
    cleaned = store_id.strip()
    if not _STORE_ID.fullmatch(cleaned):
        raise ScopeError(
            f"{store_id[:40]!r} is not a store id: 1-256 letters, digits, '.', '_', ':', '@' "
            "or '-', starting with a letter or digit"
        )
    return cleaned


@dataclass(frozen=True, slots=True)
class Scope:
    """`stores` None: every store (platform); a frozenset: those stores only (maybe none)."""

    stores: frozenset[str] | None = None

    @classmethod
    def of(cls, stores: Iterable[str] | None) -> Scope:
        """The scope a stored list means: None or no list is platform, a list is those stores."""
        return cls(None if stores is None else frozenset(stores))

    @property
    def platform(self) -> bool:
        return self.stores is None

    def allows(self, store_id: str | None) -> bool:
        """May act on this store; a resource tied to no store is the platform's alone."""
        if self.stores is None:
            return True
        return store_id is not None and store_id in self.stores

    def covers(self, other: Scope) -> bool:
        """Everything `other` reaches, this reaches too: the test for managing someone."""
        if self.stores is None:
            return True
        return other.stores is not None and other.stores <= self.stores

    def narrowed(self, token_stores: Iterable[str] | None) -> Scope:
        """A token's scope: its user's, cut down to the token's own stores when it has some."""
        if token_stores is None:
            return self
        wanted = frozenset(token_stores)
        return Scope(wanted if self.stores is None else wanted & self.stores)

    def listed(self) -> list[str] | None:
        """How it is stored: None for platform, else the sorted store ids."""
        return None if self.stores is None else sorted(self.stores)

    def describe(self) -> str:
        if self.stores is None:
            return "all stores (platform)"
        return ", ".join(sorted(self.stores)) or "no store"


PLATFORM: Final = Scope()


def changed_scope(current: Scope, *, add: Iterable[str], remove: Iterable[str], by: Scope) -> Scope:
    """`current` with stores added and removed, as an actor of scope `by` may change it.

    A scoped actor adds and removes only its own stores, and nobody makes a scoped user a
    platform operator by removing its last store: that would widen it to every store.
    """
    added = {normalize_store_id(s) for s in add}
    removed = {normalize_store_id(s) for s in remove}
    for store_id in sorted(added | removed):
        if not by.allows(store_id):
            raise ScopeError(f"store {store_id!r} is not one of yours: you cannot grant it")
    if current.stores is None:
        if removed:
            raise ScopeError(
                "this user is a platform operator (every store); give it stores with --add "
                "instead of removing some"
            )
        return Scope(frozenset(added)) if added else current
    stores = (current.stores | added) - removed
    if not stores:
        raise ScopeError(
            "that would leave the user with no store; remove the user instead "
            "(a user without stores would be a platform operator)"
        )
    return Scope(frozenset(stores))
