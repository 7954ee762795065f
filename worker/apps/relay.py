"""`ct run relay`: the SMTP server for the alias domain. Forwards, records, and never drops.

The hooks that decide, forward and record are RelayHandler's (services/relay.py); this module
serves them and wires them to MongoDB, Kafka and the SMTP upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import AnyStr

import structlog
from aiosmtpd.smtp import Envelope

from worker.adapters import mongo
from worker.adapters.kafka import make_producer, require_topics
from worker.adapters.smtp import SmtpPool
from worker.adapters.smtp_server import (
    LimitedSMTP,
    SessionLimits,
    bound_port,
    start_smtp_server,
)
from worker.apps.builder import Stores
from worker.contracts.codec import ValueCodec
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.core.service import Service
from worker.domain.aliases import SystemClock
from worker.domain.replies import TOO_BIG, TOO_MANY_SESSIONS
from worker.services.outbound import MailKeys, Outbound
from worker.services.relay import RelayEnvelope, RelayHandler
from worker.services.screening import SenderScreen

log = structlog.get_logger(__name__)


class RelaySMTP(LimitedSMTP):
    """aiosmtpd's protocol with RFC 3463 enhanced codes on its own size refusals, envelopes
    that keep what RCPT found (aiosmtpd makes each one through `_create_envelope`), and the
    session caps (`CT_RELAY_MAX_SESSIONS`, `CT_RELAY_MAX_SESSIONS_PER_IP`)."""

    refusal = TOO_MANY_SESSIONS

    def _create_envelope(self) -> Envelope:
        return RelayEnvelope()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("552 ") and "5.3.4" not in status:
            await super().push(TOO_BIG)
            return
        await super().push(status)


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class RelayService(Service):
    name = "relay"

    def __init__(
        self,
        settings: Settings,
        codec: ValueCodec,
        cipher: AddressCipher,
        keys: MailKeys | None = None,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._cipher = cipher
        # Loaded here, before the service runs: an unfit DKIM key stops the process at once.
        self._keys = keys or MailKeys.load(settings)
        self._ready = False
        self.port: int | None = None

    def is_ready(self) -> bool:
        return self._ready

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        client = mongo.connect(settings, app_name="ct-relay")
        producer = make_producer(settings, "ct-relay", linger_ms=0)
        smtp = SmtpPool.from_settings(settings)
        server = None
        try:
            db = client[settings.mongo_db]
            dialect = await mongo.prepare(db, settings.mongo_dialect)
            await producer.start()
            # Refused settings stop the relay now, before it answers a sender.
            await require_topics(settings, [settings.topic_timeline])
            await smtp.check()
            await self._codec.start()
            clock = SystemClock()
            stores = Stores(db, dialect, settings, self._cipher, clock)
            handler = RelayHandler(
                aliases=stores.aliases,
                messages=stores.messages,
                smtp=smtp,
                producer=producer,
                codec=self._codec,
                timeline_topic=settings.topic_timeline,
                domain=settings.domain,
                clock=clock,
                screen=SenderScreen.from_settings(settings),
                outbound=Outbound(self._keys),
                suppression=stores.suppression,
                subjects=stores.subjects,
            )
            server = await start_smtp_server(
                handler,
                settings.relay_host,
                settings.relay_port,
                hostname=settings.domain,
                data_size_limit=settings.relay_max_bytes,
                tls_context=tls_context(settings.relay_tls_cert, settings.relay_tls_key),
                protocol=RelaySMTP,
                sessions=SessionLimits(
                    total=settings.relay_max_sessions, per_ip=settings.relay_max_sessions_per_ip
                ),
            )
            self.port = bound_port(server)
            self._ready = True
            log.info("relay_listening", host=settings.relay_host, port=self.port)
            await _first(stopping, handler.broken)
            # Stop accepting, then let messages in flight finish their forward and record.
            self._ready = False
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handler.idle.wait(), settings.shutdown_grace_s)
            if handler.misconfigured is not None:
                raise handler.misconfigured
            if handler.broken.is_set():
                raise RuntimeError("the Kafka producer can no longer send; restart for a new one")
        finally:
            self._ready = False
            if server is not None:
                server.close()
            await smtp.close()
            await producer.stop()
            await client.close()


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
