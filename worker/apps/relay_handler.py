"""The relay's SMTP hooks: decide each recipient at RCPT, forward and record at DATA.

A message is answered 250 only after the upstream SMTP server accepted every forward and Kafka
acknowledged every MESSAGE_FORWARDED timeline event; anything transient is a 4xx, so the sending
server keeps the message and retries. The policy is the domain's (`domain/relaying.py` decides
routes and rewrites, `domain/relay_events.py` builds the timeline events); this module does the
lookups, the sending and the publishing around it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaProducer
from aiosmtpd.smtp import SMTP, Envelope, Session

from worker import metrics
from worker.adapters import mongo
from worker.adapters.alias_store import AliasRecord, AliasStore
from worker.adapters.kafka import PRODUCER_BROKEN
from worker.adapters.kafka import is_transient as kafka_transient
from worker.adapters.smtp import SmtpFailure, SmtpPool
from worker.codec import ValueCodec
from worker.config import ConfigError
from worker.domain import relay_events
from worker.domain import relaying as rules
from worker.domain.aliases import Clock, Party, is_alias_domain
from worker.events import ParticipantRole, TimelineEvent

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


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient as RCPT found it, so that DATA need not look it up again."""

    alias: rules.AliasView
    parties: rules.OrderParties


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope plus what RCPT learnt of each accepted recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.recipients: dict[str, Recipient] = {}


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
        # Set when the Kafka producer can never send again, or when the SMTP upstream refuses
        # our settings (misconfigured says why): the service stops, the process exits.
        self.broken = asyncio.Event()
        self.misconfigured: ConfigError | None = None

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        address = address.strip().lower()
        reply, recipient = await self._check_recipient(address, envelope.mail_from or "")
        if recipient is not None:
            envelope.rcpt_tos.append(address)
            if isinstance(envelope, RelayEnvelope):
                envelope.recipients[address] = recipient
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
        known = envelope.recipients if isinstance(envelope, RelayEnvelope) else {}
        outcome = FORWARDED
        try:
            for address in dict.fromkeys(envelope.rcpt_tos):
                recipient = known.get(address) or await self._resolve(address)
                reply = await self._forward(raw, envelope.mail_from or "", recipient)
                if reply is not None:
                    outcome = reply
                    break
        except Transient as exc:
            outcome = exc.reply
        except ConfigError as exc:
            # The upstream refuses our password or certificate: not the sender's fault, so a
            # 4xx (it retries later, once the relay is fixed), and the relay stops taking mail.
            outcome = rules.UPSTREAM_UNAVAILABLE
            self.misconfigured = exc
            self.broken.set()
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

    async def _check_recipient(self, address: str, mail_from: str) -> tuple[str, Recipient | None]:
        """The RCPT reply, and the recipient when it is accepted."""
        if not is_alias_domain(address, self._domain):
            metrics.MESSAGES_REJECTED.labels(reason="relay_denied").inc()
            return rules.RELAY_DENIED, None
        try:
            record = await self._mongo(lambda: self._aliases.lookup(address))
            if record is None:
                metrics.MESSAGES_REJECTED.labels(reason="unknown_alias").inc()
                return rules.UNKNOWN_ALIAS, None
            recipient = Recipient(self._view(record), await self._parties(record.order_id))
            if record.expired(self._clock.now()):
                metrics.MESSAGES_REJECTED.labels(reason="expired").inc()
                await self._record_rejection(recipient, mail_from, rules.ALIAS_EXPIRED)
                return rules.ALIAS_EXPIRED, None
            if record.role is ParticipantRole.EXTERNAL:
                # Decided now on the envelope; the From header is checked again at DATA.
                sender = mail_from.strip("<>").lower()
                if sender != recipient.parties.customer.real_address:
                    metrics.MESSAGES_REJECTED.labels(reason="not_customer").inc()
                    return rules.ONLY_CUSTOMER, None
        except Transient as exc:
            return exc.reply, None
        return RECIPIENT_OK, recipient

    async def _resolve(self, address: str) -> Recipient:
        """A recipient RCPT accepted without leaving what it found (a foreign envelope)."""
        record = await self._mongo(lambda: self._aliases.lookup(address))
        if record is None:
            raise Transient(rules.TEMPORARY_FAILURE)
        return Recipient(self._view(record), await self._parties(record.order_id))

    async def _forward(self, raw: bytes, mail_from: str, recipient: Recipient) -> str | None:
        """Forward to one recipient; None when done, else the SMTP reply that refuses it."""
        target, parties = recipient.alias, recipient.parties
        structlog.contextvars.bind_contextvars(order_id=target.order_id)
        header_from = rules.read_header(raw, "From")
        decision = rules.decide_route(
            target, parties, mail_from, header_from, None, domain=self._domain
        )
        if isinstance(decision, rules.NeedsReverseAlias):
            sender = Party(decision.sender_address, decision.sender_name)
            reverse = await self._mongo(
                lambda: self._aliases.reverse_alias(target.order_id, sender)
            )
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
        event = relay_events.forwarded(decision, summary, forwarded, at=self._clock.now())
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

    async def _record_rejection(self, recipient: Recipient, mail_from: str, reason: str) -> None:
        """MESSAGE_REJECTED on the recipient's order; best effort, the refusal stands anyway."""
        address = mail_from.strip("<>")
        event = relay_events.rejected(
            recipient.alias,
            recipient.parties.by_address(address),
            sender_key=self._aliases.address_hash(address),
            reason=reason,
            at=self._clock.now(),
        )
        try:
            await self._publish(event)
        except Transient:
            log.warning("rejection_not_recorded", alias=recipient.alias.address)

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
        records = await self._mongo(lambda: self._aliases.of_order(order_id))
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

    async def _mongo(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
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
