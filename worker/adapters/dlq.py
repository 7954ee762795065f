"""Dead letters for the console: the recent ones with their reasons, and replay of chosen ones.

Reading and re-publishing go through worker.adapters.dead_letters, as `ct dlq list` and
`ct dlq replay` do: a replayed record goes back to its original topic with its original key,
value and headers. Each replay is remembered in `dlq_replays`, so the page can say who replayed
what and when. Replaying twice is harmless: the notifier's ledger and the projector's event ids
make both idempotent.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

from worker.adapters.dead_letters import DeadLetter, dead_letters, republish
from worker.adapters.dialect import Dialect
from worker.adapters.kafka import make_producer
from worker.adapters.mongo import Database
from worker.core.config import Settings
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
    def __init__(self, settings: Settings, db: Database, clock: Clock, dialect: Dialect) -> None:
        self._dialect = dialect
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
            for doc in await self._dialect.find_each(
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
                await republish(producer, self._settings, letter)
                now = self._clock.now()
                await self._replays.update_one(
                    {"_id": self._key(letter.record.offset)},
                    {"$set": {"at": now, "operator": operator}},
                    upsert=True,
                )
        finally:
            await producer.stop()
        return wanted
