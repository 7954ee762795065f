"""Serving SMTP with aiosmtpd on the worker's own event loop, not in its threaded Controller."""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session


class DataHandler(Protocol):
    """What an aiosmtpd handler must have at the least: the hook that takes a whole message.

    aiosmtpd also calls handle_RCPT, handle_exception and the others when a handler has them.
    """

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str: ...


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
) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def make_protocol() -> SMTP:
        return protocol(
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

    return await loop.create_server(make_protocol, host, port)


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
