"""Dead letters for the console: the recent ones with their reasons, and replay of chosen ones.

Reading goes through worker.admin (the same reader as `ct dlq list`). A replay re-publishes the
record to its original topic with its original key, value and headers, as `ct dlq replay` does,
and is remembered in `dlq_replays`, so the page can say who replayed what and when. Replaying
twice is harmless: the notifier's ledger and the projector's event ids make both idempotent.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

from worker.adapters.kafka import make_producer
from worker.adapters.mongo import Database, find_each
from worker.admin import DeadLetter, dead_letters
from worker.config import Settings
from worker.domain.aliases import Clock


@dataclass(frozen=True, slots=True)
class Replay:
    at: datetime
    operator: str


@dataclass(frozen=True, slots=True)
class ListedLetter:
    offset: int
    letter: DeadLetter
    replay: Replay | None


class DeadLetterQueue:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self._settings = settings
        self._replays = db["dlq_replays"]
        self._clock = clock

    def _key(self, offset: int) -> str:
        return f"{self._settings.topic_dlq}:{offset}"

    async def recent(self, limit: int = 100) -> list[ListedLetter]:
        """The last `limit` dead letters, newest first, each with its last replay if any."""
        tail: collections.deque[DeadLetter] = collections.deque(maxlen=limit)
        async for letter in dead_letters(self._settings, group=None):
            tail.append(letter)
        letters = list(reversed(tail))
        replays = {
            doc["_id"]: Replay(doc["at"], doc["operator"])
            for doc in await find_each(
                self._replays, "_id", [self._key(letter.record.offset) for letter in letters]
            )
        }
        return [
            ListedLetter(letter.record.offset, letter, replays.get(self._key(letter.record.offset)))
            for letter in letters
        ]

    async def replay(self, offsets: set[int], operator: str) -> list[DeadLetter]:
        """Re-publish the dead letters at these offsets; returns those found and replayed."""
        wanted = [
            letter
            async for letter in dead_letters(self._settings, group=None)
            if letter.record.offset in offsets and letter.origin_topic
        ]
        if not wanted:
            return []
        producer = make_producer(self._settings, "ct-console-replay")
        await producer.start()
        try:
            for letter in wanted:
                headers = [
                    (k, v) for k, v in letter.record.headers or () if not k.startswith("ct.dlq.")
                ]
                headers.append(("ct.replayed-from", self._key(letter.record.offset).encode()))
                await producer.send_and_wait(
                    letter.origin_topic,
                    value=letter.record.value,
                    key=letter.record.key,
                    headers=headers,
                )
                now = self._clock.now()
                await self._replays.update_one(
                    {"_id": self._key(letter.record.offset)},
                    {"$set": {"at": now, "operator": operator}},
                    upsert=True,
                )
        finally:
            await producer.stop()
        return wanted
