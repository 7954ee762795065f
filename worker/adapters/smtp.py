"""Outbound SMTP through a pool of reused aiosmtplib connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from worker import metrics


class SmtpFailure(Exception):
    """The upstream did not take the message. `permanent` means retrying cannot help (5xx)."""

    def __init__(self, code: int, text: str, *, permanent: bool) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.permanent = permanent

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, SmtpFailure) and not exc.permanent


def _classify(exc: Exception) -> SmtpFailure:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = [r for r in exc.recipients if isinstance(r, aiosmtplib.SMTPResponseException)]
        # All refused: the message failed permanently only if no refusal was temporary.
        worst = min(refusals, key=lambda r: r.code) if refusals else None
        if worst is not None:
            return SmtpFailure(worst.code, worst.message, permanent=worst.code >= 500)
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
        return SmtpFailure(exc.code, exc.message, permanent=exc.code >= 500)
    # Connection refused or dropped, timeouts, protocol confusion: the sender should try again.
    return SmtpFailure(421, f"upstream unavailable: {type(exc).__name__}", permanent=False)


class SmtpPool:
    """At most `size` connections, each reused across messages and reopened when it drops."""

    def __init__(self, host: str, port: int, *, size: int, timeout: float) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        for _ in range(size):
            self._idle.put_nowait(self._new_client())

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._host, port=self._port, timeout=self._timeout, start_tls=False
        )

    async def send(
        self, message: EmailMessage | bytes, *, sender: str, recipients: Sequence[str]
    ) -> str:
        """Hand the message over; returns the upstream's reply or raises SmtpFailure."""
        client = await self._idle.get()
        started = time.perf_counter()
        try:
            for attempt in (1, 2):
                try:
                    if not client.is_connected:
                        await client.connect()
                    if isinstance(message, bytes):
                        _, reply = await client.sendmail(sender, list(recipients), message)
                    else:
                        _, reply = await client.send_message(
                            message, sender=sender, recipients=list(recipients)
                        )
                except aiosmtplib.SMTPServerDisconnected as exc:
                    # A pooled connection the server closed while idle: reopen once, at once.
                    client.close()
                    if attempt == 2:
                        raise _classify(exc) from exc
                    continue
                except (aiosmtplib.SMTPException, OSError) as exc:
                    failure = _classify(exc)
                    await self._reset(client, failure)
                    raise failure from exc
                metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
                return reply
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._idle.put_nowait(client)

    async def _reset(self, client: aiosmtplib.SMTP, failure: SmtpFailure) -> None:
        """After a refusal the connection is reusable (RSET); after anything else, reopen it."""
        if failure.code in {421, 451} or not client.is_connected:
            client.close()
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
