"""Kafka and SMTP in memory: a producer, a dead-letter sink, a scripted SMTP upstream.

Each can be told to fail: `failures` are raised by the next calls, one each, in order, so a
test says "Kafka times out once" or "the upstream answers 451, then 250".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.adapters.kafka import Record
from worker.adapters.smtp import PreparedMessage, SmtpFailure
from worker.contracts.codec import SingleObjectCodec
from worker.contracts.events import TimelineEvent

ACCEPTED = "250 2.0.0 OK: queued"


@dataclass
class MemoryProducer:
    sent: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    failures: deque[Exception] = field(default_factory=deque)

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]:
        if self.failures:
            raise self.failures.popleft()
        self.sent.append((topic, key, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any:
        return await (await self.send(topic, value, key))

    def events(self, codec: SingleObjectCodec, topic: str) -> list[TimelineEvent]:
        return [
            codec.decode(value, TimelineEvent)
            for t, _, value in self.sent
            if t == topic and value is not None
        ]


@dataclass
class MemoryDeadLetters:
    published: list[tuple[Record, str]] = field(default_factory=list)

    async def publish(self, record: Record, reason: str) -> None:
        self.published.append((record, reason))


@dataclass(frozen=True)
class Delivered:
    sender: str
    recipients: list[str]
    raw: bytes


@dataclass
class MemoryUpstream:
    """An SMTP upstream whose next replies are scripted (`replies`); 250 once they run out."""

    replies: deque[str] = field(default_factory=deque)
    delivered: list[Delivered] = field(default_factory=list)
    attempts: int = 0
    # A recipient's sends wait here before their DATA (a slow connection, say) until it is set.
    held: dict[str, asyncio.Event] = field(default_factory=dict)

    def refuse(self, *replies: str) -> None:
        self.replies.extend(replies)

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> str:
        return self._answer(message, sender, list(recipients))

    @contextlib.asynccontextmanager
    async def prepare(
        self, message: bytes, *, sender: str, recipient: str
    ) -> AsyncIterator[PreparedMessage]:
        async def end_of_data() -> str:
            return self._answer(message, sender, [recipient])

        if (gate := self.held.get(recipient)) is not None:
            await gate.wait()
        yield PreparedMessage(end_of_data)

    def _answer(self, message: bytes, sender: str, recipients: list[str]) -> str:
        self.attempts += 1
        reply = self.replies.popleft() if self.replies else ACCEPTED
        code, _, text = reply.partition(" ")
        if int(code) >= 400:
            raise SmtpFailure(int(code), text, permanent=int(code) >= 500)
        self.delivered.append(Delivered(sender, recipients, message))
        return reply
