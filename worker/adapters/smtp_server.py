"""Serving SMTP with aiosmtpd on the worker's own event loop, not in its threaded Controller."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session


class DataHandler(Protocol):
    """What an aiosmtpd handler must have at the least: the hook that takes a whole message.

    aiosmtpd also calls handle_RCPT, handle_exception and the others when a handler has them.
    """

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str: ...


class SessionLimits:
    """Concurrent sessions in total and per client IP; `enter` says whether one more fits."""

    def __init__(self, *, total: int, per_ip: int) -> None:
        self._total, self._per_ip = total, per_ip
        self._open: Counter[str] = Counter()
        self._count = 0

    def enter(self, ip: str) -> bool:
        if self._count >= self._total or self._open[ip] >= self._per_ip:
            return False
        self._open[ip] += 1
        self._count += 1
        return True

    def leave(self, ip: str) -> None:
        self._count -= 1
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]


class LimitedSMTP(SMTP):
    """aiosmtpd's protocol that answers `refusal` and closes a connection beyond `limits`.

    Decided in `connection_made`, before aiosmtpd starts the session's task: a refused
    connection costs one write, and the sessions that fit never wait behind it.
    """

    limits: SessionLimits | None = None
    refusal: str = "421 4.7.0 Too many connections, please try again later"
    _counted_ip: str | None = None
    _refused: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.limits is not None and self._counted_ip is None and not self._refused:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
            if not self.limits.enter(ip):
                self._refused = True
                transport.write(self.refusal.encode("ascii") + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._counted_ip = ip
        super().connection_made(transport)  # also called again after STARTTLS: counted once

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never started this session
        if self.limits is not None and self._counted_ip is not None:
            self.limits.leave(self._counted_ip)
            self._counted_ip = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()


async def start_smtp_server(
    handler: DataHandler,
    host: str,
    port: int,
    *,
    hostname: str,
    data_size_limit: int,
    tls_context: ssl.SSLContext | None = None,
    idle_timeout: float = 300,
    protocol: type[SMTP] = SMTP,
    sessions: SessionLimits | None = None,
) -> asyncio.Server:
    """`sessions` needs a `LimitedSMTP` protocol, which enforces it."""
    loop = asyncio.get_running_loop()
    if sessions is not None and not issubclass(protocol, LimitedSMTP):
        raise TypeError("session limits need a LimitedSMTP protocol")

    def make_protocol() -> SMTP:
        made = protocol(
            handler,
            hostname=hostname,
            ident="Conversation Tracker ESMTP",
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            timeout=idle_timeout,
            loop=loop,
        )
        if isinstance(made, LimitedSMTP):
            made.limits = sessions
        return made

    return await loop.create_server(make_protocol, host, port)


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
