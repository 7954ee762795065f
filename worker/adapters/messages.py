"""Whole messages as sent or forwarded (`messages`, GridFS bucket `message_blobs`).

One document per message we send: the sealed raw MIME the console shows, and what a bounce of
it needs (`SentMessage`: the order, the participants' aliases and roles). The relay keeps a
forward before it goes; the notifier writes its email once the upstream has answered, together
with the outcome of that send (`outcome`: the ledger record of adapters/deliveries.py), so that
an email costs one database write.

Each message is kept as its raw MIME, sealed with AES-256-GCM under the same keys as the
addresses (AddressCipher: the current key seals, retired ones still open, `ct keys reencrypt`
moves everything to the current key) and bound to its timeline event id, so a blob cannot be
passed off as another message. One document per timeline event, `_id` = the event id; a sealed
message over `inline_max_bytes` goes to GridFS (a document holds at most 16 MiB, the relay takes
up to 25). The body is deleted `retention_days` after it was kept, and reading a message past
that answers as if it were gone, whether or not the sweep has run yet; what a bounce needs stays
until its bounce address expires (`bounceUntil`, the alias validity), never longer; a send's
outcome stays as long as the ledger needs it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from bson import Binary
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from worker.adapters.dialect import Dialect, Document
from worker.adapters.mongo import Database
from worker.adapters.subject_keys import SubjectKeys
from worker.contracts.events import ConversationMessage
from worker.core.crypto import AddressCipher, SubjectKey
from worker.core.offload import off_loop_if_large
from worker.domain.aliases import Clock
from worker.domain.bounces import SentMessage

log = structlog.get_logger(__name__)
INLINE_MAX_BYTES = 1024 * 1024
# Large chunks: FerretDB v1 reads a file's chunks by scanning the chunk collection, once per
# read, so fewer chunk documents is what keeps a large message quick to open there.
CHUNK_BYTES = 4 * 1024 * 1024
BUCKET = "message_blobs"
NO_BODY = {"blob": 0}
OUTCOME_ONLY = {"outcome": 1}
INDEXES = {"messages": [IndexModel([("expiresAt", ASCENDING)], name="by_expiry")]}


@dataclass(frozen=True, slots=True)
class KeptMessage:
    event_id: str
    order_id: str
    store_id: str
    kept_at: datetime
    expires_at: datetime
    size_bytes: int
    in_gridfs: bool


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """A message sealed and its document built (`MessageStore.seal`), not yet written."""

    doc: Document
    sealed: bytes


def _kept(doc: Document) -> KeptMessage:
    return KeptMessage(
        event_id=doc["_id"],
        order_id=doc["orderId"],
        store_id=doc["storeId"],
        kept_at=doc["keptAt"],
        expires_at=doc["expiresAt"],
        size_bytes=doc["sizeBytes"],
        in_gridfs=doc.get("blobFile") is not None,
    )


def _listed(doc: Document, now: datetime) -> bool:
    """A message kept, not yet expired: not the note of a notification that sent nothing."""
    return doc["expiresAt"] > now and not doc.get("unsent")


def _associated(event_id: str) -> str:
    # A namespace of its own, so that no sealed address can ever be opened as a message.
    return f"message:{event_id}"


class MessageStore:
    def __init__(
        self,
        db: Database,
        cipher: AddressCipher,
        *,
        retention_days: int,
        clock: Clock,
        dialect: Dialect,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        subject_keys: SubjectKeys | None = None,
    ) -> None:
        self._dialect = dialect
        # A message of a data subject is sealed under their key instead (erasure shreds it).
        self.subject_keys = subject_keys
        self._messages = db["messages"]
        self._bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=CHUNK_BYTES)
        self._cipher = cipher
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._inline_max = inline_max_bytes

    async def keep(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> bool:
        """Keep a message once; False when this event's message was kept already (a retry).

        `sent` is what a bounce of it will need; it is kept until `sent.expires_at`. With
        `subject_id` the body is sealed under that data subject's key.
        """
        sealed = await self.seal(
            event_id=event_id,
            order_id=order_id,
            store_id=store_id,
            raw=raw,
            sent=sent,
            subject_id=subject_id,
        )
        return await self.insert(sealed)

    async def seal(
        self,
        *,
        event_id: str,
        order_id: str,
        store_id: str,
        raw: bytes,
        sent: SentMessage | None = None,
        subject_id: str | None = None,
    ) -> SealedMessage:
        """The message sealed, its document built, nothing written: `insert` writes it.

        The notifier seals before its send and inserts after the upstream's answer, so that the
        kept message and its outcome are one write (adapters/deliveries.py).
        """
        now = self._clock.now()
        sealed = await self._seal(raw, event_id, subject_id)
        doc: Document = {
            "_id": event_id,
            "orderId": order_id,
            "storeId": store_id,
            "keptAt": now,
            "expiresAt": now + self._retention,
            "sizeBytes": len(raw),
            "keyId": None if subject_id else self._cipher.current_key_id,
            "subjectId": subject_id,
            "blob": None,
            "blobFile": None,
            "message": sent.message.to_record() if sent else None,
            "bounceUntil": sent.expires_at if sent else None,
        }
        return SealedMessage(doc, sealed)

    async def insert(self, message: SealedMessage, *, outcome: Document | None = None) -> bool:
        """Write a sealed message (with the `outcome` of its send, if any) in one insert; False
        when a message was kept under this id already (a retry, a race): nothing is written."""
        doc = {**message.doc, "outcome": outcome}
        event_id = doc["_id"]
        if len(message.sealed) > self._inline_max:
            if await self._messages.find_one({"_id": event_id}, {"_id": 1}) is not None:
                return False  # a retry: no second upload
            # The file first, then the document that points at it: a crash in between leaves an
            # orphan file, which carries its own expiry for the sweep, never a dangling pointer.
            doc["blobFile"] = await self._upload(message.sealed, event_id, doc["expiresAt"])
        else:
            doc["blob"] = Binary(message.sealed)
        try:
            await self._messages.insert_one(doc)
        except DuplicateKeyError:
            if doc["blobFile"] is not None:
                await self._delete_file(doc["blobFile"])
            return False
        return True

    async def kept(self, event_id: str) -> Document | None:
        """The document kept under this id, without its body."""
        return await self._messages.find_one({"_id": event_id}, NO_BODY)

    async def note_unsent(self, *, event_id: str, order_id: str, outcome: Document) -> bool:
        """The outcome of a notification that sent nothing (suppressed, erased) under the id
        its email would have had: a document without a body, which no reader lists as a kept
        message. False when a document was there already: nothing is written."""
        now = self._clock.now()
        doc: Document = {
            "_id": event_id, "orderId": order_id, "storeId": None, "keptAt": now,
            "expiresAt": now + self._retention, "sizeBytes": 0, "keyId": None,
            "subjectId": None, "blob": None, "blobFile": None, "message": None,
            "bounceUntil": None, "unsent": True, "outcome": outcome,
        }  # fmt: skip
        try:
            await self._messages.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def outcomes(self, event_ids: Iterable[str]) -> dict[str, Document]:
        """The send outcomes recorded with these messages (`insert(outcome=...)`), by id."""
        docs = await self._dialect.find_each(self._messages, "_id", event_ids, OUTCOME_ONLY)
        return {doc["_id"]: doc["outcome"] for doc in docs if doc.get("outcome")}

    async def describe(self, event_ids: Iterable[str]) -> dict[str, KeptMessage]:
        """Which of these events' messages are kept (and not expired), without opening them."""
        now = self._clock.now()
        docs = await self._dialect.find_each(self._messages, "_id", event_ids, {"blob": 0})
        return {doc["_id"]: _kept(doc) for doc in docs if _listed(doc, now)}

    async def open(self, event_id: str, order_id: str) -> bytes | None:
        """The raw message of this order's event, or None (never kept, expired, other order)."""
        doc = await self._messages.find_one({"_id": event_id})
        if doc is None or doc["orderId"] != order_id or not _listed(doc, self._clock.now()):
            return None
        if doc.get("blobFile") is not None:
            try:
                stream = await self._bucket.open_download_stream(doc["blobFile"])
                sealed = await stream.read()
            except NoFile:
                log.warning("message_blob_missing", event_id=event_id)
                return None
        else:
            sealed = bytes(doc["blob"])
        return await self._open(sealed, event_id, doc.get("subjectId"))

    async def sent(self, event_id: str) -> SentMessage | None:
        """What we sent as this timeline event, for its bounce; None when we sent no such
        message, or its bounce address has expired."""
        doc = await self._messages.find_one({"_id": event_id}, {"blob": 0})
        if doc is None or doc.get("message") is None:
            return None
        if doc["bounceUntil"] <= self._clock.now():
            return None
        return SentMessage(
            event_id=doc["_id"],
            order_id=doc["orderId"],
            store_id=doc["storeId"],
            message=ConversationMessage.model_validate(doc["message"]),
            expires_at=doc["bounceUntil"],
        )

    async def purge_expired(self) -> int:
        """Delete message bodies past their retention; returns how many went.

        A document whose bounce address still works keeps what a bounce needs, body gone.
        """
        now = self._clock.now()
        past_retention = {"expiresAt": {"$lte": now}}
        # What a bounce needs stays while the bounce address works; a send's outcome stays for
        # good, as the notifier's ledger record (a replayed event must find it).
        stays = {"$or": [{"bounceUntil": {"$gt": now}}, {"outcome": {"$ne": None}}]}
        bounceable = {**past_retention, **stays, "bodyGone": {"$ne": True}, "unsent": {"$ne": True}}
        bodies = [doc async for doc in self._messages.find(bounceable, {"blobFile": 1})]
        for doc in bodies:
            await self._messages.update_one(
                {"_id": doc["_id"]}, {"$set": {"blob": None, "blobFile": None, "bodyGone": True}}
            )
        bounce_gone = {**past_retention, "message": {"$ne": None}, "bounceUntil": {"$lte": now}}
        await self._messages.update_many(bounce_gone, {"$set": {"message": None}})
        done = {
            **past_retention,
            "outcome": None,
            "$or": [{"bounceUntil": None}, {"bounceUntil": {"$lte": now}}],
        }
        doomed = [doc async for doc in self._messages.find(done, {"blobFile": 1, "bodyGone": 1})]
        for doc in doomed:
            await self._messages.delete_one({"_id": doc["_id"]})
        for doc in [*bodies, *doomed]:
            if doc.get("blobFile") is not None:
                await self._delete_file(doc["blobFile"])
        # Orphans of a crash between upload and insert.
        async for grid_file in self._bucket.find({"metadata.expiresAt": {"$lte": now}}):
            await self._delete_file(grid_file._id)
        return len(bodies) + sum(not doc.get("bodyGone") for doc in doomed)

    async def reencrypt(self) -> tuple[int, int]:
        """Re-seal every kept message under the current key; returns (seen, rewritten)."""
        seen = rewritten = 0
        async for doc in self._messages.find({}, {"_id": 1, "keyId": 1, "orderId": 1}):
            seen += 1
            # Under a subject key (rewrapped, not rewritten) or current already: nothing to do.
            if doc.get("keyId") in (None, self._cipher.current_key_id):
                continue
            full = await self._messages.find_one({"_id": doc["_id"]})
            raw = await self.open(doc["_id"], doc["orderId"]) if full else None
            if full is None or raw is None:
                continue
            sealed = await self._seal(raw, full["_id"])
            update: Document = {"keyId": self._cipher.current_key_id}
            old_file = full.get("blobFile")
            if old_file is not None:
                update["blobFile"] = await self._upload(sealed, full["_id"], full["expiresAt"])
            else:
                update["blob"] = Binary(sealed)
            await self._messages.update_one({"_id": full["_id"]}, {"$set": update})
            if old_file is not None:
                await self._delete_file(old_file)
            rewritten += 1
        return seen, rewritten

    async def _upload(self, sealed: bytes, event_id: str, expires: datetime) -> str:
        file_id = uuid.uuid4().hex
        await self._bucket.upload_from_stream_with_id(
            file_id, event_id, sealed, metadata={"eventId": event_id, "expiresAt": expires}
        )
        return file_id

    async def _delete_file(self, file_id: object) -> None:
        with contextlib.suppress(NoFile):  # deleted by a concurrent sweep
            await self._bucket.delete(file_id)

    async def of_orders(self, order_ids: Iterable[str]) -> list[KeptMessage]:
        """The kept messages of these orders (a scan: for data-subject requests)."""
        docs = self._messages.find({"orderId": {"$in": list(order_ids)}}, {"blob": 0})
        now = self._clock.now()
        return [_kept(doc) async for doc in docs if _listed(doc, now)]

    async def delete_orders(self, order_ids: Iterable[str]) -> int:
        """Delete every kept message of these orders, bodies and bounce records alike."""
        docs = self._messages.find({"orderId": {"$in": list(order_ids)}}, {"blobFile": 1})
        doomed = [doc async for doc in docs]
        for doc in doomed:
            await self._messages.delete_one({"_id": doc["_id"]})
            if doc.get("blobFile") is not None:
                await self._delete_file(doc["blobFile"])
        return len(doomed)

    async def _seal(self, raw: bytes, event_id: str, subject_id: str | None = None) -> bytes:
        if subject_id is not None:
            key = await self._subject_key(subject_id)
            if key is None:
                raise ValueError("the message's data subject was erased: nothing may be kept")
            return await off_loop_if_large(len(raw), key.seal_bytes, raw, _associated(event_id))
        return await off_loop_if_large(
            len(raw), self._cipher.encrypt_bytes, raw, _associated(event_id)
        )

    async def _open(self, sealed: bytes, event_id: str, subject_id: str | None) -> bytes | None:
        if subject_id is not None:
            key = await self._subject_key(subject_id)
            if key is None:
                return None  # erased: as if the message were gone
            return await off_loop_if_large(
                len(sealed), key.open_bytes, sealed, _associated(event_id)
            )
        return await off_loop_if_large(
            len(sealed), self._cipher.decrypt_bytes, sealed, _associated(event_id)
        )

    async def _subject_key(self, subject_id: str) -> SubjectKey | None:
        if self.subject_keys is None:
            raise RuntimeError("a message sealed per subject needs the store's SubjectKeys")
        return await self.subject_keys.key(subject_id)
