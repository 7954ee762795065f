"""Dead letters for the console: the recent ones with their reasons, and replay of chosen ones.

Reading and re-publishing go through worker.adapters.dead_letters, as `ct dlq list` and
`ct dlq replay` do: a replayed record goes back to its original topic with its original key,
value and headers. Each replay is remembered in `dlq_replays`, so the page can say who replayed
what and when. Replaying twice is harmless: the notifier's ledger and the projector's event ids
make both idempotent.

A dead letter belongs to the store its record names, when the record can be read (an order
event or a timeline event whose content was refused); one that cannot be read belongs to no
store, and only platform operators see it. The topic has no index to ask by store, so the
scan that reads it anyway keeps only the letters in scope, before the limit is applied.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

from worker.adapters.dead_letters import DeadLetter, Opener, dead_letters, republish
from worker.adapters.dialect import Dialect
from worker.adapters.kafka import make_producer
from worker.adapters.mongo import Database
from worker.contracts.codec import DecodeError, SingleObjectCodec
from worker.contracts.events import OrderStatusChanged, TimelineEvent
from worker.core.config import Settings
from worker.domain.aliases import Clock
from worker.domain.scope import Scope


@dataclass(frozen=True, slots=True)
class Replay:
    at: datetime
    operator: str


@dataclass(frozen=True, slots=True)
class ListedLetter:
    offset: int
    letter: DeadLetter
    replay: Replay | None
    store_id: str | None = None


class DeadLetterQueue:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        dialect: Dialect,
        open_value: Opener | None = None,
    ) -> None:
        self._open_value = open_value
        self._dialect = dialect
        self._settings = settings
        self._replays = db["dlq_replays"]
        self._clock = clock
        self._codec = SingleObjectCodec()

    def _key(self, offset: int) -> str:
        return f"{self._settings.topic_dlq}:{offset}"

    def store_of(self, letter: DeadLetter) -> str | None:
        """The store the dead record names, or None when it cannot be read."""
        value = letter.record.value
        if value is None:
            return None
        try:
            return self._codec.decode(value, OrderStatusChanged).store_id
        except DecodeError:
            pass
        try:
            return self._codec.decode(value, TimelineEvent).store_id
        except DecodeError:
            return None

    async def _in_scope(
        self, scope: Scope
    ) -> collections.abc.AsyncIterator[tuple[DeadLetter, str | None]]:
        async for letter in dead_letters(self._settings, group=None):
            store_id = self.store_of(letter)
            if scope.allows(store_id):
                yield letter, store_id

    async def recent(self, scope: Scope, limit: int = 100) -> list[ListedLetter]:
        """The last `limit` dead letters in scope, newest first, each with its last replay."""
        tail: collections.deque[tuple[DeadLetter, str | None]] = collections.deque(maxlen=limit)
        async for found in self._in_scope(scope):
            tail.append(found)
        letters = [letter for letter, _ in reversed(tail)]
        stores = {letter.record.offset: store for letter, store in tail}
        replays = {
            doc["_id"]: Replay(doc["at"], doc["operator"])
            for doc in await self._dialect.find_each(
                self._replays, "_id", [self._key(letter.record.offset) for letter in letters]
            )
        }
        return [
            ListedLetter(
                letter.record.offset,
                letter,
                replays.get(self._key(letter.record.offset)),
                stores[letter.record.offset],
            )
            for letter in letters
        ]

    async def replayable(
        self, offsets: set[int], scope: Scope
    ) -> list[tuple[DeadLetter, str | None]]:
        """The dead letters at these offsets that `scope` reaches and that name their topic."""
        return [
            (letter, store_id)
            async for letter, store_id in self._in_scope(scope)
            if letter.record.offset in offsets and letter.origin_topic
        ]

    async def replay(self, wanted: list[DeadLetter], operator: str) -> list[DeadLetter]:
        """Re-publish these dead letters (from `replayable`); returns them."""
        if not wanted:
            return []
        replayed = []
        producer = make_producer(self._settings, "ct-console-replay")
        await producer.start()
        try:
            for letter in wanted:
                if not await republish(producer, self._settings, letter, self._open_value):
                    continue
                replayed.append(letter)
                now = self._clock.now()
                await self._replays.update_one(
                    {"_id": self._key(letter.record.offset)},
                    {"$set": {"at": now, "operator": operator}},
                    upsert=True,
                )
        finally:
            await producer.stop()
        return replayed
