"""The `subjects` and `subject_ids` collections: one data key per data subject, wrapped.

A data subject is a customer's normalised real address. Its key is random, stored only wrapped by
the deployment key (crypto.wrap_subject_key: envelope encryption, so rotating the deployment key
rewraps these small blobs, never the data they seal), beside the address itself sealed under the
subject key (so the keyed hash can be recomputed after a rotation, and so that erasure removes it
too). `subjects` is keyed by a random subject id, never by the hash: a person erased and then back
with a new order is a new subject with a new key. `subject_ids` (`_id` = the address's keyed hash)
names the current subject of an address; get-or-create claims it by insert, race-free without
transactions, as the alias store claims its order keys.

Erasure deletes the wrapped key and the sealed address and keeps a tombstone (`erasedAt`), so a
reader can tell "erased" from "unknown". Workers cache keys (bounded, CACHE_TTL_S), so the notifier
pays no database round trip per event; a worker may therefore use a key up to CACHE_TTL_S after
another process erased it, and what it seals then is unreadable, as erased data should be.

A KMS plugs in at `wrap_subject_key`/`unwrap_subject_key`: replace the deployment key's AES-GCM by
the KMS's Encrypt/Decrypt of the 32-byte key (or its data-key API), keep `keyId` as the KMS key's
version; the cache keeps KMS calls to one per subject per CACHE_TTL_S.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bson import Binary
from cachetools import TTLCache
from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import MONGODB, Dialect, Document, insert_each
from worker.adapters.mongo import Database
from worker.core.crypto import (
    AddressCipher,
    SubjectKey,
    unwrap_subject_key,
    wrap_subject_key,
)
from worker.domain.aliases import Clock, normalize_address

CACHE_TTL_S: Final = 60.0
_ADDRESS: Final = "address"
_UNATTRIBUTED: Final = "dead-letter:unattributed"


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    subject_id: str
    address_hash: str
    created_at: datetime
    erased_at: datetime | None


class SubjectKeys:
    def __init__(
        self,
        db: Database,
        cipher: AddressCipher,
        *,
        clock: Clock,
        cache_size: int = 0,
        dialect: Dialect = MONGODB,
    ) -> None:
        self._dialect = dialect
        self._subjects = db["subjects"]
        self._ids = db["subject_ids"]
        self._cipher = cipher
        self._clock = clock
        self._by_hash: TTLCache[str, SubjectKey] | None = None
        self._by_id: TTLCache[str, SubjectKey | None] | None = None
        if cache_size:
            self._by_hash = TTLCache(cache_size, CACHE_TTL_S)
            self._by_id = TTLCache(cache_size, CACHE_TTL_S)

    def address_hash(self, address: str) -> str:
        return self._cipher.address_hash(_canonical(address))

    async def for_address(self, address: str, since: datetime | None = None) -> SubjectKey | None:
        """The current subject's key of `address`, created on first use (a new subject).

        None when the address was erased and what asks began before that (`since`: when the
        order's aliases were made): an old order of an erased person never gets a new key,
        even from a worker whose caches still hold the address; a newer order starts a new
        subject.
        """
        address = _canonical(address)
        address_hash = self._cipher.address_hash(address)
        if self._by_hash is not None and address_hash in self._by_hash:
            return self._by_hash[address_hash]
        claim = await self._ids.find_one({"_id": address_hash})
        key = await self.key(str(claim["subjectId"])) if claim and claim.get("subjectId") else None
        if key is None:
            erased_at = claim.get("erasedAt") if claim else None
            if erased_at is not None and (since is None or since <= erased_at):
                return None
            key = await self._create(address, address_hash, replacing=claim is not None)
        self._remember(address_hash, key)
        return key

    async def for_addresses(self, addresses: Iterable[str], since: datetime) -> None:
        """Make sure these addresses' subjects exist, the new ones created together (a poll's
        new customers): one read and two unordered inserts for them all, where `for_address`
        costs a read and two inserts each. Only with a cache, which is where the keys go:
        `for_address` then answers from it. An address it cannot settle at once (erased,
        a claim without its subject, a race lost) is left to `for_address`, which can.
        """
        if self._by_hash is None:
            return
        wanted = {
            self._cipher.address_hash(a): a
            for a in map(_canonical, addresses)
            if self._cipher.address_hash(a) not in self._by_hash
        }
        claims = await self._dialect.find_each(self._ids, "_id", wanted)
        keys = await self.keys(str(c["subjectId"]) for c in claims if c.get("subjectId"))
        for claim in claims:
            key = keys.get(str(claim.get("subjectId")))
            if key is not None:
                self._by_hash[claim["_id"]] = key
            del wanted[claim["_id"]]
        data_keys = {h: (str(uuid.uuid4()), SubjectKey.new_key()) for h in wanted}
        made = {h: SubjectKey(*k) for h, k in data_keys.items()}
        subjects = [self._document(wanted[h], h, *k) for h, k in data_keys.items()]
        stored = await insert_each(self._subjects, subjects)
        claimed = await insert_each(
            self._ids,
            [{"_id": h, "subjectId": key.subject_id} for h, key in made.items()
             if key.subject_id in stored],
        )  # fmt: skip
        for address_hash, key in made.items():
            if address_hash in claimed:
                self._remember(address_hash, key)
            elif key.subject_id in stored:  # another worker claimed the address first
                await self._subjects.delete_one({"_id": key.subject_id})

    async def current_id(self, address: str) -> str | None:
        """The address's current subject, without creating one."""
        doc = await self._ids.find_one({"_id": self.address_hash(address)})
        return str(doc["subjectId"]) if doc else None

    async def key(self, subject_id: str) -> SubjectKey | None:
        """The subject's key; None when it was erased (or never existed here)."""
        return (await self.keys([subject_id]))[subject_id]

    async def keys(self, subject_ids: Iterable[str]) -> dict[str, SubjectKey | None]:
        """These subjects' keys (None: erased, or never here), the ones not cached read
        together: a poll's orders opened with a read, not a read per customer."""
        found: dict[str, SubjectKey | None] = {}
        missing = []
        for subject_id in dict.fromkeys(subject_ids):
            if self._by_id is not None and subject_id in self._by_id:
                found[subject_id] = self._by_id[subject_id]
            else:
                missing.append(subject_id)
        read = await self._dialect.find_each(self._subjects, "_id", missing)
        opened = {doc["_id"]: self._unwrap(doc) for doc in read}
        for subject_id in missing:
            found[subject_id] = opened.get(subject_id)
            if self._by_id is not None:
                self._by_id[subject_id] = found[subject_id]
        return found

    async def of_address(self, address: str) -> list[SubjectRecord]:
        """Every subject this address has been (erased ones too), oldest first."""
        address_hash = self.address_hash(address)
        docs = [doc async for doc in self._subjects.find({"addressHash": address_hash})]
        return sorted((_record(d) for d in docs), key=lambda r: r.created_at)

    async def live(self) -> list[tuple[SubjectRecord, str]]:
        """Every subject not erased, with its address (for retention)."""
        found = []
        async for doc in self._subjects.find({"erasedAt": None}):
            key = self._unwrap(doc)
            if key is not None:
                found.append((_record(doc), _open_address(key, doc)))
        return found

    async def erase(self, subject_id: str) -> bool:
        """Destroy the subject's key and sealed address; False when it was erased already."""
        doc = await self._subjects.find_one({"_id": subject_id})
        if doc is None or doc.get("erasedAt") is not None:
            return False
        await self._subjects.update_one(
            {"_id": subject_id},
            {"$set": {"erasedAt": self._clock.now(), "wrapped": None, "addressEnc": None}},
        )
        # The claim becomes a tombstone (only if it still names this subject: a newer subject of
        # the address keeps its claim), so that old orders never get a new key.
        await self._ids.update_one(
            {"_id": doc["addressHash"], "subjectId": subject_id},
            {"$set": {"subjectId": None, "erasedAt": self._clock.now()}},
        )
        self._forget(subject_id, doc["addressHash"])
        return True

    async def rewrap_all(self) -> tuple[int, int]:
        """Rewrap every live key under the current deployment key, and rehash its address
        (the keyed hash changes with the key); returns (seen, rewrapped)."""
        seen = rewrapped = 0
        async for doc in self._subjects.find({"erasedAt": None}):
            seen += 1
            wrapped = bytes(doc["wrapped"])
            if not self._cipher.needs_reencrypt(wrapped):
                continue
            key = self._unwrap(doc)
            if key is None:
                continue
            data_key = unwrap_subject_key(self._cipher, wrapped, doc["_id"])
            address = _open_address(key, doc)
            new_hash = self._cipher.address_hash(address)
            await self._subjects.update_one(
                {"_id": doc["_id"]},
                {"$set": {
                    "wrapped": Binary(wrap_subject_key(self._cipher, data_key, doc["_id"])),
                    "keyId": self._cipher.current_key_id,
                    "addressHash": new_hash,
                }},
            )  # fmt: skip
            claim = await self._ids.find_one({"_id": doc["addressHash"]})
            if claim is not None and claim["subjectId"] == doc["_id"]:
                with contextlib.suppress(DuplicateKeyError):
                    await self._ids.insert_one({"_id": new_hash, "subjectId": doc["_id"]})
                await self._ids.delete_one({"_id": doc["addressHash"]})
            rewrapped += 1
        return seen, rewrapped

    def seal_unattributed(self, value: bytes) -> bytes:
        """A value whose subject cannot be told (it does not decode), under the deployment key."""
        return self._cipher.encrypt_bytes(value, _UNATTRIBUTED)

    def open_unattributed(self, blob: bytes) -> bytes:
        return self._cipher.decrypt_bytes(blob, _UNATTRIBUTED)

    async def _current(self, address_hash: str) -> SubjectKey | None:
        claim = await self._ids.find_one({"_id": address_hash})
        if claim is None or not claim.get("subjectId"):
            return None
        return await self.key(str(claim["subjectId"]))

    async def _create(self, address: str, address_hash: str, *, replacing: bool) -> SubjectKey:
        subject_id, data_key = str(uuid.uuid4()), SubjectKey.new_key()
        key = SubjectKey(subject_id, data_key)
        await self._subjects.insert_one(self._document(address, address_hash, subject_id, data_key))
        if replacing:
            # The tombstone of an erased subject, or a claim whose subject is gone.
            await self._ids.delete_one({"_id": address_hash})
        try:
            await self._ids.insert_one({"_id": address_hash, "subjectId": subject_id})
        except DuplicateKeyError:
            # Another worker created this address's subject at the same time: theirs wins.
            await self._subjects.delete_one({"_id": subject_id})
            winner = await self._current(address_hash)
            if winner is None:
                raise RuntimeError("a subject claim vanished while it was being read") from None
            return winner
        return key

    def _document(
        self, address: str, address_hash: str, subject_id: str, data_key: bytes
    ) -> Document:
        sealed_address = SubjectKey(subject_id, data_key).seal_bytes(address.encode(), _ADDRESS)
        return {
            "_id": subject_id,
            "addressHash": address_hash,
            "wrapped": Binary(wrap_subject_key(self._cipher, data_key, subject_id)),
            "keyId": self._cipher.current_key_id,
            "addressEnc": Binary(sealed_address),
            "createdAt": self._clock.now(),
            "erasedAt": None,
        }

    def _unwrap(self, doc: Document) -> SubjectKey | None:
        if doc.get("erasedAt") is not None or doc.get("wrapped") is None:
            return None
        data_key = unwrap_subject_key(self._cipher, bytes(doc["wrapped"]), doc["_id"])
        return SubjectKey(doc["_id"], data_key)

    def _remember(self, address_hash: str, key: SubjectKey) -> None:
        if self._by_hash is not None and self._by_id is not None:
            self._by_hash[address_hash] = key
            self._by_id[key.subject_id] = key

    def _forget(self, subject_id: str, address_hash: str) -> None:
        if self._by_id is not None:
            self._by_id.pop(subject_id, None)
        if self._by_hash is not None:
            self._by_hash.pop(address_hash, None)


def _canonical(address: str) -> str:
    try:
        return normalize_address(address)
    except ValueError:
        return address.strip().lower()


def _open_address(key: SubjectKey, doc: Document) -> str:
    return key.open_bytes(bytes(doc["addressEnc"]), _ADDRESS).decode("utf-8")


def _record(doc: Document) -> SubjectRecord:
    return SubjectRecord(doc["_id"], doc["addressHash"], doc["createdAt"], doc.get("erasedAt"))
