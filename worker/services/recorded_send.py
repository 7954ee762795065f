"""No duplicate email: the notifier's one owner of "each event emails its customer once".

The whole story, in the order it happens to an event:

1. `outcomes` reads the ledger (one document per event id, adapters/deliveries.py) before the
   event is worked on. An event with an outcome (sent, refused, suppressed) is not sent again:
   its recorded timeline events are republished exactly as they were (a redelivery after a
   rebalance, a restart that lost its offsets, a replay, the same event twice in a batch).
2. `send` hands the message to the upstream and records its acceptance within one *turn*: the
   record is the email's one database write, the kept message with its outcome. At
   most `max_unrecorded` (CT_NOTIFIER_MAX_UNRECORDED, default 1) emails of a process are between
   the end of their DATA (where the upstream accepts) and the end of their ledger write. A kill
   at any moment can therefore re-send at most that many emails once restarted: the bound of
   "no duplicate beyond one per kill". Everything else of a send (connection, MAIL, RCPT, the
   body) overlaps across the pool's connections; what the bound costs is throughput, at most
   max_unrecorded / (end-of-DATA latency + ledger-write latency) emails per second.
3. A graceful stop whose grace ran out cancels the batch: a send in its turn still records what
   the upstream may be accepting before the cancellation goes on, so only a kill re-sends.
4. A refusal raises SmtpFailure unrecorded; the caller records it with its report (the email
   kept with it, `record_sent`), as it records a suppressed notification (`record`), so that a
   redelivery does not try again.
5. `record` keeps the first outcome: two workers racing on one event (a rebalance) both get the
   one that was stored first, and publish the same timeline events (their ids are derived).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from worker.adapters import mongo
from worker.adapters.deliveries import Delivery
from worker.adapters.messages import SealedMessage
from worker.adapters.smtp import PreparedMessage
from worker.core.retry import retry_transient
from worker.services.ports import Ledger, Upstream

T = TypeVar("T")


class RecordedSender:
    def __init__(
        self,
        smtp: Upstream,
        ledger: Ledger,
        *,
        max_unrecorded: int = 1,
        max_delay: float = 30.0,
    ) -> None:
        self._smtp = smtp
        self._ledger = ledger
        self._turns = asyncio.Semaphore(max_unrecorded)
        self._max_delay = max_delay

    async def outcomes(self, event_ids: Sequence[str]) -> dict[str, Delivery]:
        """The recorded outcomes among these events (one ledger read for an order's batch)."""
        return await self._retried(lambda: self._ledger.find_many(list(event_ids)), "find_many")

    async def record(self, outcome: Delivery) -> Delivery:
        """Record an outcome; when another worker recorded this event first, theirs is returned."""
        return await self._retried(lambda: self._ledger.record(outcome), "record")

    async def record_sent(self, outcome: Delivery, kept: SealedMessage) -> Delivery:
        """Keep the email with its outcome (one write); the outcome stored first stands."""
        return await self._retried(lambda: self._ledger.record_sent(outcome, kept), "record_sent")

    async def send_recorded(
        self,
        message: bytes,
        *,
        sender: str,
        recipient: str,
        kept: SealedMessage,
        outcome: Callable[[], Delivery],
    ) -> Delivery:
        """Send, then keep `kept` with `outcome()` (built once accepted: its time is the
        acceptance's) in one write."""
        return await self.send(
            message,
            sender=sender,
            recipient=recipient,
            record=lambda: self.record_sent(outcome(), kept),
        )

    async def send(
        self,
        message: bytes,
        *,
        sender: str,
        recipient: str,
        record: Callable[[], Awaitable[T]],
    ) -> T:
        """Send, then `record` the acceptance, within one turn; raises SmtpFailure unrecorded."""
        prepare = self._smtp.prepare(message, sender=sender, recipient=recipient)
        # The turn is taken once the message is prepared: only the end of DATA and the record wait.
        async with prepare as prepared, self._turns:
            turn = asyncio.ensure_future(self._finish_and_record(prepared, record))
            try:
                return await asyncio.shield(turn)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await turn
                raise

    @staticmethod
    async def _finish_and_record(
        prepared: PreparedMessage, record: Callable[[], Awaitable[T]]
    ) -> T:
        await prepared.finish()
        return await record()

    async def _retried(self, operation: Callable[[], Awaitable[T]], name: str) -> T:
        return await retry_transient(
            operation,
            name=f"mongo.ledger.{name}",
            is_transient=mongo.is_transient,
            max_delay=self._max_delay,
        )
