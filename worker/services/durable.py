"""250 only when durable: the relay's one rule for its answer to DATA, forwards and bounces alike.

A sender that gets 250 deletes its copy, so the relay says 250 only once everything that makes
the message safe has completed: for a forward, the message kept whole, the upstream's acceptance
and Kafka's acknowledgement of its timeline event; for a bounce, its report's timeline event
(and the suppression it starts). Anything transient on the way (MongoDB, the upstream, Kafka) is
a 4xx, so that the sender keeps the message and retries; a refusal the work decides (an unknown
alias, a screening rule) is its own reply. `reply_when_durable` is the one place that says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from worker.adapters import mongo
from worker.adapters.kafka import is_transient as kafka_transient
from worker.domain.replies import TEMPORARY_FAILURE


class Transient(Exception):
    """Something we depend on is down: answer `reply` (a 4xx) so that the sender retries."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


async def reply_when_durable(work: Callable[[], Awaitable[str | None]], *, accepted: str) -> str:
    """Run `work`, which makes a message durable and returns None, or the refusal to answer
    instead; `accepted` (the 250) only when it returned None. A transient failure anywhere in
    it is its 4xx; anything else is a bug and propagates (the SMTP handler answers 451)."""
    try:
        refusal = await work()
    except Transient as exc:
        return exc.reply
    except Exception as exc:
        if mongo.is_transient(exc) or kafka_transient(exc):
            return TEMPORARY_FAILURE
        raise
    return accepted if refusal is None else refusal
