"""`ct run relay`: the SMTP server for the alias domain. Forwards, records, and never drops.

A message is answered 250 only after the upstream SMTP server accepted every forward and Kafka
acknowledged every MESSAGE_FORWARDED timeline event; anything transient is a 4xx, so the sending
server keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any, AnyStr, TypeVar

import structlog
from aiokafka import AIOKafkaProducer
from aiosmtpd.smtp import SMTP, Envelope, Session

from worker import metrics
from worker.adapters import mongo
from worker.adapters.alias_store import AliasRecord, AliasStore, Party
from worker.adapters.kafka import PRODUCER_BROKEN, make_producer
from worker.adapters.kafka import is_transient as kafka_transient
from worker.adapters.smtp import SmtpFailure, SmtpPool
from worker.adapters.smtp_server import bound_port, start_smtp_server
from worker.apps.runtime import Service
from worker.codec import ValueCodec
from worker.config import Settings
from worker.crypto import AddressCipher
from worker.domain import relaying as rules
from worker.domain.aliases import Clock, SystemClock, is_alias_domain
from worker.events import (
    ConversationMessage,
    Direction,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)

log = structlog.get_logger(__name__)
RECIPIENT_OK = "250 2.1.5 Recipient OK"
FORWARDED = "250 2.0.0 Message forwarded"
KAFKA_TIMEOUT_S = 20.0
INLINE_PARSE_BYTES = 256 * 1024
T = TypeVar("T")


class Transient(Exception):
    """Something we depend on is down: answer 4xx so that the sender retries."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class RelayHandler:
    """aiosmtpd handler: the RCPT and DATA hooks, plus the answer to any unexpected error."""

    def __init__(
        self,
        *,
        aliases: AliasStore,
        smtp: SmtpPool,
        producer: AIOKafkaProducer[bytes, bytes],
        codec: ValueCodec,
        timeline_topic: str,
        domain: str,
        clock: Clock,
    ) -> None:
        self._aliases = aliases
        self._smtp = smtp
        self._producer = producer
        self._codec = codec
        self._topic = timeline_topic
        self._domain = domain
        self._clock = clock
        self._in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        # Set when the Kafka producer can never send again: the service stops, the process exits.
        self.broken = asyncio.Event()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._check_recipient(address.strip().lower(), envelope.mail_from or "")
        if reply == RECIPIENT_OK:
            envelope.rcpt_tos.append(address.strip().lower())
        else:
            log.info("recipient_refused", reply=reply, recipient=address)
        return reply

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self._in_flight += 1
        self.idle.clear()
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        content = envelope.original_content or envelope.content or b""
        raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        outcome = FORWARDED
        try:
            for recipient in dict.fromkeys(envelope.rcpt_tos):
                reply = await self._forward(raw, envelope.mail_from or "", recipient)
                if reply is not None:
                    outcome = reply
                    break
        except Transient as exc:
            outcome = exc.reply
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self.idle.set()
        log.info(
            "message_relayed" if outcome == FORWARDED else "message_refused",
            outcome=outcome[:3],
            reply=outcome,
            recipients=len(envelope.rcpt_tos),
            size_bytes=len(raw),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return outcome

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is a 500, which makes the sender bounce the mail: a bug of ours
        # must instead make it retry later.
        log.error("session_error", error=type(error).__name__, exc_info=error)
        return rules.TEMPORARY_FAILURE

    async def _check_recipient(self, address: str, mail_from: str) -> str:
        if not is_alias_domain(address, self._domain):
            metrics.MESSAGES_REJECTED.labels(reason="relay_denied").inc()
            return rules.RELAY_DENIED
        try:
            record = await self._aliases.lookup(address)
            if record is None:
                metrics.MESSAGES_REJECTED.labels(reason="unknown_alias").inc()
                return rules.UNKNOWN_ALIAS
            if record.expired(self._clock.now()):
                metrics.MESSAGES_REJECTED.labels(reason="expired").inc()
                await self._record_rejection(record, mail_from)
                return rules.ALIAS_EXPIRED
            if record.role is ParticipantRole.EXTERNAL:
                # Decided now on the envelope; the From header is checked again at DATA.
                parties = await self._parties(record.order_id)
                if mail_from.strip("<>").lower() != parties.customer.real_address:
                    metrics.MESSAGES_REJECTED.labels(reason="not_customer").inc()
                    return rules.ONLY_CUSTOMER
        except Exception as exc:
            if isinstance(exc, Transient) or mongo.is_transient(exc):
                return rules.TEMPORARY_FAILURE
            raise
        return RECIPIENT_OK

    async def _forward(self, raw: bytes, mail_from: str, recipient: str) -> str | None:
        """Forward to one recipient; None when done, else the SMTP reply that refuses it."""
        record = await self._mongo(self._aliases.lookup(recipient))
        if record is None:  # vanished between RCPT and DATA
            return rules.UNKNOWN_ALIAS
        structlog.contextvars.bind_contextvars(order_id=record.order_id)
        parties = await self._parties(record.order_id)
        target = self._view(record)
        header_from = rules.read_header(raw, "From")
        decision = rules.decide_route(
            target, parties, mail_from, header_from, None, domain=self._domain
        )
        if isinstance(decision, rules.NeedsReverseAlias):
            sender = Party(decision.sender_address, decision.sender_name)
            reverse = await self._mongo(self._aliases.reverse_alias(record.order_id, sender))
            decision = rules.decide_route(
                target, parties, mail_from, header_from, self._view(reverse), domain=self._domain
            )
        if isinstance(decision, rules.Refusal):
            metrics.MESSAGES_REJECTED.labels(reason=f"refused_{decision.code}").inc()
            return decision.text
        if not isinstance(decision, rules.Route):
            return rules.TEMPORARY_FAILURE
        try:
            forwarded, summary = await _off_loop_if_large(
                len(raw), _rewrite_and_summarize, raw, decision, parties, self._domain
            )
        except rules.MessageRejected as exc:
            metrics.MESSAGES_REJECTED.labels(reason=f"rejected_{exc.code}").inc()
            return exc.text
        event = self._forwarded_event(decision, summary, forwarded)
        structlog.contextvars.bind_contextvars(event_id=event.event_id)
        try:
            await self._smtp.send(
                forwarded, sender=decision.sender_alias, recipients=[decision.deliver_to]
            )
        except SmtpFailure as exc:
            if not exc.permanent:
                raise Transient(rules.UPSTREAM_UNAVAILABLE) from exc
            metrics.MESSAGES_REJECTED.labels(reason="upstream_refused").inc()
            return exc.reply if exc.code >= 500 else rules.TEMPORARY_FAILURE
        await self._publish(event)
        metrics.MESSAGES_RELAYED.labels(direction=decision.direction.value).inc()
        return None

    def _forwarded_event(
        self, route: rules.Route, summary: rules.MessageSummary, forwarded: bytes
    ) -> TimelineEvent:
        recipient = route.recipient_alias
        key = rules.message_key(forwarded, summary.message_id)
        return TimelineEvent(
            event_id=rules.forward_event_id(key, recipient.address),
            order_id=recipient.order_id,
            store_id=recipient.store_id,
            occurred_at=self._clock.now(),
            kind=TimelineKind.MESSAGE_FORWARDED,
            causation_id=summary.message_id or key,
            message=ConversationMessage(
                message_id=summary.message_id or key,
                from_=Participant(
                    alias=route.sender_alias, name=route.sender_name, role=route.sender_role
                ),
                to=Participant(
                    alias=recipient.address, name=recipient.display_name, role=recipient.role
                ),
                subject=summary.subject,
                first_words=summary.first_words,
                has_attachment=bool(summary.attachment_names),
                attachment_names=list(summary.attachment_names),
                direction=route.direction,
                size_bytes=summary.size_bytes,
            ),
        )

    async def _record_rejection(self, record: AliasRecord, mail_from: str) -> None:
        """MESSAGE_REJECTED on the order of an expired alias; best effort, the 550 stands anyway."""
        parties = await self._parties(record.order_id)
        sender = parties.by_address(mail_from.strip("<>"))
        event = TimelineEvent(
            event_id=str(uuid.uuid4()),
            order_id=record.order_id,
            store_id=record.store_id,
            occurred_at=self._clock.now(),
            kind=TimelineKind.MESSAGE_REJECTED,
            causation_id=record.address,
            message=ConversationMessage(
                message_id="",
                from_=Participant(
                    alias=sender.address if sender else "",
                    name=sender.display_name if sender else None,
                    role=sender.role if sender else ParticipantRole.EXTERNAL,
                ),
                to=Participant(alias=record.address, name=record.name, role=record.role),
                subject="",
                first_words="",
                has_attachment=False,
                attachment_names=[],
                direction=Direction(f"TO_{record.role.value}"),
                size_bytes=0,
                reason=rules.ALIAS_EXPIRED,
            ),
        )
        try:
            await self._publish(event)
        except Transient:
            log.warning("rejection_not_recorded", alias=record.address)

    async def _publish(self, event: TimelineEvent) -> None:
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT_S):
                await self._producer.send_and_wait(
                    self._topic, key=event.order_id.encode(), value=self._codec.encode(event)
                )
        except Exception as exc:
            if isinstance(exc, PRODUCER_BROKEN):
                self.broken.set()
            if kafka_transient(exc) or isinstance(exc, PRODUCER_BROKEN):
                raise Transient(rules.TEMPORARY_FAILURE) from exc
            raise

    async def _parties(self, order_id: str) -> rules.OrderParties:
        records = await self._mongo(self._aliases.of_order(order_id))
        by_role = {r.role: self._view(r) for r in records if r.role is not ParticipantRole.EXTERNAL}
        externals = tuple(self._view(r) for r in records if r.role is ParticipantRole.EXTERNAL)
        if ParticipantRole.CUSTOMER not in by_role or ParticipantRole.STORE not in by_role:
            raise Transient(rules.TEMPORARY_FAILURE)  # aliases half-created by a racing worker
        return rules.OrderParties(
            by_role[ParticipantRole.CUSTOMER], by_role[ParticipantRole.STORE], externals
        )

    def _view(self, record: AliasRecord) -> rules.AliasView:
        return rules.AliasView(
            address=record.address,
            role=record.role,
            order_id=record.order_id,
            store_id=record.store_id,
            real_address=record.real_address,
            display_name=record.name,
            expired=record.expired(self._clock.now()),
        )

    async def _mongo(self, operation: Any) -> Any:
        try:
            return await operation
        except Exception as exc:
            if mongo.is_transient(exc):
                raise Transient(rules.TEMPORARY_FAILURE) from exc
            raise


def _rewrite_and_summarize(
    raw: bytes, route: rules.Route, parties: rules.OrderParties, domain: str
) -> tuple[bytes, rules.MessageSummary]:
    forwarded = rules.rewrite_for_forward(raw, route, parties, domain=domain)
    return forwarded, rules.summarize(forwarded)


async def _off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """Run `work` in a thread for a large message only: parsing megabytes would stall every
    session on the loop, while for a typical message the thread hop costs more than the work."""
    if size > INLINE_PARSE_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


class RelaySMTP(SMTP):
    """aiosmtpd's protocol with RFC 3463 enhanced codes on its own size refusals."""

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("552 ") and "5.3.4" not in status:
            await super().push(rules.TOO_BIG)
            return
        await super().push(status)


def tls_context(cert: Any, key: Any) -> ssl.SSLContext | None:
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class RelayService(Service):
    name = "relay"

    def __init__(self, settings: Settings, codec: ValueCodec, cipher: AddressCipher) -> None:
        self._settings = settings
        self._codec = codec
        self._cipher = cipher
        self._ready = False
        self.port: int | None = None

    def is_ready(self) -> bool:
        return self._ready

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        client = mongo.connect(settings, app_name="ct-relay")
        producer = make_producer(settings, "ct-relay", linger_ms=0)
        smtp = SmtpPool(
            settings.smtp_host,
            settings.smtp_port,
            size=settings.smtp_pool_size,
            timeout=settings.smtp_timeout_s,
        )
        server = None
        try:
            db = client[settings.mongo_db]
            await mongo.prepare(db)
            await producer.start()
            clock = SystemClock()
            handler = RelayHandler(
                aliases=AliasStore(
                    db,
                    self._cipher,
                    domain=settings.domain,
                    ttl_days=settings.alias_ttl_days,
                    clock=clock,
                    cache_size=settings.alias_cache_size,
                ),
                smtp=smtp,
                producer=producer,
                codec=self._codec,
                timeline_topic=settings.topic_timeline,
                domain=settings.domain,
                clock=clock,
            )
            server = await start_smtp_server(
                handler,
                settings.relay_host,
                settings.relay_port,
                hostname=settings.domain,
                data_size_limit=settings.relay_max_bytes,
                tls_context=tls_context(settings.relay_tls_cert, settings.relay_tls_key),
                protocol=RelaySMTP,
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
