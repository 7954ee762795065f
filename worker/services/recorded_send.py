"""Sending an email and recording it, so that a kill at any moment re-sends at most one.

The notifier's ledger is what keeps a redelivered event from emailing twice. A process killed
after the upstream accepted an email (its answer to the end of DATA) and before the ledger holds
that acceptance sends it again once restarted. So acceptances take turns: at most
`max_unrecorded` (default 1) emails of a process are between the end of their DATA and the end
of their ledger write at any moment, which bounds the duplicates per kill. Everything else of a
send (connection, MAIL, RCPT, the body) overlaps across the pool's connections.

What the bound costs is throughput: a process accepts at most max_unrecorded / (end-of-DATA
latency + ledger-write latency) emails per second (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from worker.adapters.smtp import PreparedMessage, SmtpPool

T = TypeVar("T")


class RecordedSender:
    def __init__(self, smtp: SmtpPool, *, max_unrecorded: int = 1) -> None:
        self._smtp = smtp
        self._turns = asyncio.Semaphore(max_unrecorded)

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
                # A graceful stop whose grace ran out cancels the batch: an email the upstream
                # may be accepting now is recorded first, so that only a kill can re-send one.
                with contextlib.suppress(Exception):
                    await turn
                raise

    @staticmethod
    async def _finish_and_record(
        prepared: PreparedMessage, record: Callable[[], Awaitable[T]]
    ) -> T:
        await prepared.finish()
        return await record()
