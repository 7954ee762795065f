"""The message store against the real MongoDB-wire database: sealed at rest, GridFS, retention."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from email.message import EmailMessage

import pytest

from tests.support.clock import MovableClock
from worker.adapters import mongo
from worker.adapters.dialect import FERRETDB
from worker.adapters.messages import BUCKET, MessageStore
from worker.contracts.events import ConversationMessage, Direction, Participant, ParticipantRole
from worker.core.crypto import AddressCipher, DecryptError
from worker.domain.bounces import SentMessage

pytestmark = pytest.mark.stack
KEY = os.urandom(32)
NEW_KEY = os.urandom(32)
# The store reads the same either way; FerretDB's per-value reads are the slower path to cover.
DIALECT = FERRETDB


def _raw(body: str = "Your parcel arrives tomorrow.", attachment: bytes = b"") -> bytes:
    message = EmailMessage()
    message["From"] = "ff2e6348a53a4d449af92be2a1011328@ct.example.com"
    message["To"] = "0e2b9c1d4f5a6b7c8d9e0f1a2b3c4d5e@ct.example.com"
    message["Subject"] = "Delivery window"
    message.set_content(body)
    if attachment:
        message.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="slip.pdf"
        )
    return message.as_bytes()


def _store(
    db: mongo.Database, clock: MovableClock, *keys: bytes, inline: int = 4096
) -> MessageStore:
    return MessageStore(
        db,
        AddressCipher(list(keys or (KEY,))),
        retention_days=60,
        clock=clock,
        dialect=DIALECT,
        inline_max_bytes=inline,
    )


async def test_a_kept_message_opens_for_its_order_only_and_is_sealed_at_rest(
    db: mongo.Database,
) -> None:
    clock = MovableClock()
    store = _store(db, clock)
    raw = _raw("The words nobody may read in the database")
    assert await store.keep(event_id="e1", order_id="o1", store_id="s1", raw=raw)
    assert not await store.keep(event_id="e1", order_id="o1", store_id="s1", raw=raw)

    assert await store.open("e1", "o1") == raw
    assert await store.open("e1", "another-order") is None
    assert await store.open("missing", "o1") is None
    doc = await db["messages"].find_one({"_id": "e1"})
    assert doc is not None and b"nobody may read" not in bytes(doc["blob"])
    assert set(await store.describe(["e1", "missing"])) == {"e1"}


async def test_a_large_message_goes_to_gridfs_and_comes_back_whole(db: mongo.Database) -> None:
    clock = MovableClock()
    store = _store(db, clock, inline=64 * 1024)
    raw = _raw(attachment=os.urandom(3 * 1024 * 1024))
    assert await store.keep(event_id="big", order_id="o1", store_id="s1", raw=raw)

    doc = await db["messages"].find_one({"_id": "big"})
    assert doc is not None and doc["blob"] is None and doc["blobFile"]
    assert await db[f"{BUCKET}.files"].count_documents({}) == 1
    assert await store.open("big", "o1") == raw
    assert (await store.describe(["big"]))["big"].in_gridfs


async def test_messages_past_retention_are_unreadable_then_deleted_with_their_files(
    db: mongo.Database,
) -> None:
    clock = MovableClock()
    store = _store(db, clock, inline=1024)
    await store.keep(event_id="old-small", order_id="o1", store_id="s1", raw=_raw())
    await store.keep(
        event_id="old-big", order_id="o1", store_id="s1", raw=_raw(attachment=os.urandom(4096))
    )
    clock.advance(timedelta(days=59))
    await store.keep(event_id="young", order_id="o1", store_id="s1", raw=_raw())
    clock.advance(timedelta(days=1, seconds=1))

    assert await store.open("old-small", "o1") is None  # expired before any sweep ran
    assert set(await store.describe(["old-small", "old-big", "young"])) == {"young"}
    assert await store.purge_expired() == 2
    assert await db["messages"].count_documents({}) == 1
    assert await db[f"{BUCKET}.files"].count_documents({}) == 0
    assert await db[f"{BUCKET}.chunks"].count_documents({}) == 0
    assert await store.open("young", "o1") is not None


async def test_rotation_reseals_messages_under_the_new_key(db: mongo.Database) -> None:
    clock = MovableClock()
    old = _store(db, clock, KEY, inline=2048)
    small, big = _raw(), _raw(attachment=os.urandom(8192))
    await old.keep(event_id="s", order_id="o1", store_id="s1", raw=small)
    await old.keep(event_id="b", order_id="o1", store_id="s1", raw=big)

    rotated = _store(db, clock, NEW_KEY, KEY, inline=2048)
    assert await rotated.open("b", "o1") == big  # the retired key still opens
    assert await rotated.reencrypt() == (2, 2)
    assert await rotated.reencrypt() == (2, 0)
    assert await db[f"{BUCKET}.files"].count_documents({}) == 1  # the old file went

    new_only = _store(db, clock, NEW_KEY, inline=2048)
    assert await new_only.open("s", "o1") == small
    assert await new_only.open("b", "o1") == big
    with pytest.raises(DecryptError, match="CT_ENCRYPTION_OLD_KEYS"):
        await old.open("s", "o1")


def _sent(event_id: str, bounce_until: datetime) -> SentMessage:
    message = ConversationMessage(
        message_id="<m1@ct.example.com>",
        from_=Participant(alias="s" * 32 + "@ct.example.com", role=ParticipantRole.STORE),
        to=Participant(alias="c" * 32 + "@ct.example.com", role=ParticipantRole.CUSTOMER),
        subject="Your order",
        first_words="Hello",
        has_attachment=False,
        attachment_names=[],
        direction=Direction.TO_CUSTOMER,
        size_bytes=100,
    )
    return SentMessage(event_id, "o1", "s1", message, bounce_until)


async def test_what_a_bounce_needs_outlives_the_body_until_the_bounce_address_expires(
    db: mongo.Database,
) -> None:
    """One document per sent message serves the console and the bounces: past the retention
    the body goes, the bounce record stays while its VERP address still works, then all goes."""
    clock = MovableClock()
    store = _store(db, clock, inline=1024)
    bounce_until = clock.now() + timedelta(days=90)
    sent = _sent("sent-1", bounce_until)
    big = _raw(attachment=os.urandom(4096))
    assert await store.keep(event_id="sent-1", order_id="o1", store_id="s1", raw=big, sent=sent)
    assert await store.sent("sent-1") == sent
    assert await store.sent("never-sent") is None

    clock.advance(timedelta(days=61))  # past the 60-day retention, before the bounce expiry
    assert await store.purge_expired() == 1
    assert await store.open("sent-1", "o1") is None
    assert await db[f"{BUCKET}.files"].count_documents({}) == 0
    assert await store.sent("sent-1") == sent
    assert await store.purge_expired() == 0  # the body went once; nothing more to do yet

    clock.advance(timedelta(days=30))
    assert await store.sent("sent-1") is None  # the bounce address has expired as well
    assert await store.purge_expired() == 0
    assert await db["messages"].count_documents({}) == 0
