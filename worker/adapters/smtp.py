"""Outbound SMTP through a pool of reused aiosmtplib connections."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiosmtplib
import structlog
from aiosmtplib import SMTPStatus

from worker.adapters import smtp_client
from worker.core import metrics
from worker.core.config import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


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


def _data_body(message: bytes) -> bytes:
    """The DATA content before its final ".": CRLF line endings, a CRLF at the end, and every
    line that starts with "." given a second one (RFC 5321 section 4.5.2)."""
    lines = _LINE_BREAK.sub(b"\r\n", message)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return _LEADING_DOT.sub(b"..", lines)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, SmtpFailure) and not exc.permanent


def classify_failure(exc: Exception) -> SmtpFailure:
    """What an aiosmtplib or socket error means for the message: a 5xx refusal is permanent,
    anything else (4xx, a dropped connection, a timeout) is worth another try."""
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


def _write_raw(client: aiosmtplib.SMTP, data: bytes) -> None:
    """Write DATA content without its end, the one step aiosmtplib has no public method for.

    aiosmtplib's data() sends the content and its end in one go. `SMTP.protocol.write` is the
    seam used instead: pyproject.toml pins aiosmtplib to the versions it was tested with, and
    tests/integration/test_smtp_pool.py checks the seam byte for byte.
    """
    if client.protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    client.protocol.write(data)


class PreparedMessage:
    """A message the upstream has all of but the end of DATA; see SmtpPool.prepare."""

    def __init__(self, end_of_data: Callable[[], Awaitable[str]]) -> None:
        self._end_of_data = end_of_data
        self.finished = False

    async def finish(self) -> str:
        """Send the end of DATA; returns the upstream's reply or raises SmtpFailure."""
        if self.finished:
            raise RuntimeError("a prepared message is finished once")
        self.finished = True
        return await self._end_of_data()


class SmtpPool:
    """At most `size` connections, each reused across messages and reopened when it drops.

    Built from the settings, each connection does what CT_SMTP_TLS says (STARTTLS, required, or
    implicit TLS) and AUTH when it opens; a message then costs no handshake. A refusal that only
    a setting can fix (535, an untrusted certificate, no STARTTLS) raises Rejected, not
    SmtpFailure: it is neither the recipient's fault (DELIVERY_FAILED) nor transient.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._options: dict[str, Any] = smtp_client.connection_options(settings)
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        for _ in range(settings.smtp_pool_size):
            self._idle.put_nowait(self._new_client())

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpPool:
        smtp_client.warn_if_unverified(settings)
        return cls(settings)

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(**self._options)

    async def check(self) -> None:
        """At start: raise Rejected if the upstream refuses the settings. An upstream that is
        down is only logged: sends retry until it is back."""
        try:
            await smtp_client.probe(self._settings)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("smtp_upstream_unavailable", error=type(exc).__name__, detail=str(exc))

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> str:
        """Hand the message over; returns the upstream's reply or raises SmtpFailure."""

        async def transaction(client: aiosmtplib.SMTP) -> str:
            _, reply = await client.sendmail(sender, list(recipients), message)
            return reply

        async with self._borrowed() as client:
            started = time.perf_counter()
            reply = await self._attempt(client, transaction, reconnect=True)
            metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
            return reply

    @contextlib.asynccontextmanager
    async def prepare(
        self, message: bytes, *, sender: str, recipient: str
    ) -> AsyncIterator[PreparedMessage]:
        """Hand over all of a message but the end of its DATA, which the upstream accepts on.

        Inside the block, `await prepared.finish()` sends the end and returns the reply, or
        raises SmtpFailure. Many messages can be prepared at once on the pool's connections;
        a caller that must record each acceptance before the next can happen (the notifier's
        one-duplicate-per-kill bound) serialises only the `finish()` calls. A block left
        without `finish()` (an error, a cancellation) closes its connection, which is mid-DATA,
        so the upstream drops the message and the connection carries no other.
        """
        body = _data_body(message)

        async def all_but_the_end(client: aiosmtplib.SMTP) -> None:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            size = [f"SIZE={len(body)}"] if client.supports_extension("size") else []
            await client.mail(sender, options=size)
            await client.rcpt(recipient)
            reply = await client.execute_command(b"DATA")
            if reply.code != SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            _write_raw(client, body)

        async with self._borrowed() as client:
            started = time.perf_counter()
            await self._attempt(client, all_but_the_end, reconnect=True)
            prepared = PreparedMessage(lambda: self._end_of_data(client, started))
            try:
                yield prepared
            finally:
                if not prepared.finished:
                    client.close()

    async def _end_of_data(self, client: aiosmtplib.SMTP, started: float) -> str:
        async def end_of_data(client: aiosmtplib.SMTP) -> str:
            reply = await client.execute_command(b".")
            if reply.code != SMTPStatus.completed:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            return reply.message

        reply = await self._attempt(client, end_of_data, reconnect=False)
        metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
        return reply

    @contextlib.asynccontextmanager
    async def _borrowed(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """A pooled connection for one transaction, given back afterwards.

        Abandoned midway (cancelled while waiting for a turn, say) it may be in the middle of
        DATA: it is closed, so it cannot carry the next message and the upstream drops this one.
        After an SmtpFailure, `_attempt` has already left it clean.
        """
        client = await self._idle.get()
        try:
            yield client
        except SmtpFailure:
            raise
        except BaseException:
            client.close()
            raise
        finally:
            self._idle.put_nowait(client)

    async def _attempt(
        self,
        client: aiosmtplib.SMTP,
        step: Callable[[aiosmtplib.SMTP], Awaitable[T]],
        *,
        reconnect: bool,
    ) -> T:
        """Run one step of a transaction; failures become SmtpFailure and leave `client` clean."""
        for attempt in (1, 2):
            try:
                if not client.is_connected:
                    await client.connect()
                return await step(client)
            except aiosmtplib.SMTPServerDisconnected as exc:
                # A pooled connection the server closed while idle: reopen once, at once.
                client.close()
                if attempt == 2 or not reconnect:
                    raise classify_failure(exc) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                self._raise_if_misconfigured(exc)
                failure = classify_failure(exc)
                await self._reset(client, failure)
                raise failure from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_if_misconfigured(self, exc: BaseException) -> None:
        problem = smtp_client.misconfiguration(exc, self._settings)
        if problem is not None:
            raise problem from None

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
