"""The audit log's hash chains: one per store, and one for entries that concern no store.

Each entry holds its chain's name, its number in the chain (1, 2, ...), the digest of the entry
before it and its own digest: SHA-256 over a canonical JSON of every field but its own digest.
Editing an entry changes its digest; deleting one leaves a gap in the numbers; either breaks the
chain at that entry, which `first_broken` finds. (Cutting the newest entries off the end leaves a
valid, shorter chain: that needs the head kept elsewhere, which `ct audit verify` prints.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

PLATFORM_CHAIN: Final = "(platform)"  # parentheses are never part of a store id
GENESIS: Final = "0" * 64
# Fields the digest does not cover: the entry's own digest, and the database's id for it.
_UNSIGNED: Final = frozenset({"digest", "_id"})


def chain_of(store: str | None) -> str:
    return store if store else PLATFORM_CHAIN


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        # BSON keeps milliseconds; the digest is taken over what is read back.
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def link_digest(fields: Mapping[str, Any]) -> str:
    """The digest an entry with these fields (its `prev` among them) must carry."""
    signed = {k: v for k, v in fields.items() if k not in _UNSIGNED}
    text = json.dumps(_plain(signed), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class BrokenLink:
    chain: str
    seq: int  # the number the entry should have had (or has, when its digest is wrong)
    entry_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    chain: str
    entries: int
    head: str  # the digest of the newest entry: keep it elsewhere to notice truncation
    broken: BrokenLink | None


def verify_chain(chain: str, entries: Iterable[Mapping[str, Any]]) -> ChainReport:
    """Walk one chain's entries in `seq` order; the first entry that does not link is reported."""
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for entry in entries:
        count += 1
        seq = entry.get("seq")
        entry_id = str(entry.get("_id"))
        if seq != expected_seq:
            reason = (
                f"entry {expected_seq} is missing (the next one is {seq})"
                if isinstance(seq, int) and seq > expected_seq
                else f"entry number {seq!r} where {expected_seq} belongs"
            )
            return ChainReport(
                chain, count, expected_prev, BrokenLink(chain, expected_seq, entry_id, reason)
            )
        if entry.get("prev") != expected_prev:
            return ChainReport(
                chain,
                count,
                expected_prev,
                BrokenLink(chain, seq, entry_id, "it does not hold the digest of the entry before"),
            )
        if entry.get("digest") != link_digest(entry):
            return ChainReport(
                chain,
                count,
                expected_prev,
                BrokenLink(chain, seq, entry_id, "its content does not match its digest (edited)"),
            )
        expected_prev, expected_seq = str(entry["digest"]), expected_seq + 1
    return ChainReport(chain, count, expected_prev, None)
