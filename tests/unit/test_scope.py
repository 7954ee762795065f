"""Scopes of users and tokens, and the audit chain: the pure rules, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.domain.audit_chain import GENESIS, chain_of, link_digest, verify_chain
from worker.domain.scope import PLATFORM, Scope, ScopeError, changed_scope, normalize_store_id

A, B = Scope(frozenset({"aurora"})), Scope(frozenset({"bazar"}))
BOTH = Scope(frozenset({"aurora", "bazar"}))


def test_a_platform_scope_reaches_every_store_and_storeless_things() -> None:
    assert PLATFORM.allows("aurora") and PLATFORM.allows(None)
    assert PLATFORM.covers(A) and PLATFORM.covers(PLATFORM)


def test_a_scoped_principal_reaches_its_stores_only_and_nothing_storeless() -> None:
    assert A.allows("aurora") and not A.allows("bazar") and not A.allows(None)
    assert BOTH.covers(A) and not A.covers(BOTH) and not A.covers(PLATFORM)


def test_a_token_narrows_its_user_and_never_widens_it() -> None:
    assert A.narrowed(None) == A
    assert PLATFORM.narrowed(["bazar"]) == B
    assert BOTH.narrowed(["bazar", "elsewhere"]) == B
    nothing = A.narrowed(["bazar"])
    assert nothing.stores == frozenset() and not nothing.platform  # empty is not "everything"
    assert not nothing.allows("aurora") and not nothing.allows(None)


def test_a_scoped_admin_changes_scopes_within_its_own_stores() -> None:
    assert changed_scope(A, add=["bazar"], remove=[], by=PLATFORM) == BOTH
    assert changed_scope(BOTH, add=[], remove=["bazar"], by=BOTH) == A
    with pytest.raises(ScopeError, match="not one of yours"):
        changed_scope(A, add=["bazar"], remove=[], by=A)
    with pytest.raises(ScopeError, match="no store"):
        changed_scope(A, add=[], remove=["aurora"], by=PLATFORM)  # would become platform
    with pytest.raises(ScopeError, match="platform operator"):
        changed_scope(PLATFORM, add=[], remove=["aurora"], by=PLATFORM)
    assert changed_scope(PLATFORM, add=["aurora"], remove=[], by=PLATFORM) == A


def test_store_ids_are_checked() -> None:
    assert normalize_store_id(" aurora ") == "aurora"
    for bad in ("", " ", "(platform)", "a b", "x" * 257):
        with pytest.raises(ScopeError):
            normalize_store_id(bad)


def _chain(n: int, store: str | None = "aurora") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        entry: dict[str, Any] = {
            "_id": f"{chain_of(store)}:{seq:012d}",
            "at": datetime(2026, 1, 1, 12, 0, seq, 123000, tzinfo=UTC),
            "action": "message.open",
            "operator": "sam",
            "store": store,
            "orderId": f"o-{seq}",
            "messages": ["e1", "e2"],
            "previous": {"maskType": "hard"},
            "chain": chain_of(store),
            "seq": seq,
            "prev": prev,
        }
        entry["digest"] = prev = link_digest(entry)
        entries.append(entry)
    return entries


def test_an_intact_chain_verifies_and_reports_its_head() -> None:
    entries = _chain(5)
    report = verify_chain("aurora", entries)
    assert report.broken is None and report.entries == 5 and report.head == entries[-1]["digest"]
    assert verify_chain("(platform)", _chain(2, None)).broken is None


def test_an_edited_entry_breaks_the_chain_there() -> None:
    entries = _chain(5)
    entries[2]["operator"] = "mallory"
    broken = verify_chain("aurora", entries).broken
    assert broken is not None and broken.seq == 3 and "edited" in broken.reason


def test_an_edit_with_a_recomputed_digest_breaks_the_next_link() -> None:
    entries = _chain(5)
    entries[1]["reason"] = "covering tracks"
    entries[1]["digest"] = link_digest(entries[1])
    broken = verify_chain("aurora", entries).broken
    assert broken is not None and broken.seq == 3 and "before" in broken.reason


def test_a_deleted_entry_breaks_the_chain_at_its_place() -> None:
    entries = _chain(5)
    del entries[1]
    broken = verify_chain("aurora", entries).broken
    assert broken is not None and broken.seq == 2 and "missing" in broken.reason
