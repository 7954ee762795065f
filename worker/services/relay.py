"""The relay's SMTP hooks: decide each recipient at RCPT, screen, forward and record at DATA.

A message is answered 250 only after each forward was kept whole in the message store, the
upstream SMTP server accepted it and Kafka acknowledged its MESSAGE_FORWARDED timeline event;
anything transient is a 4xx, so the sending server keeps the message and retries
(`reply_when_durable`, services/durable.py, which the bounce path shares). A transaction
carries one route (`domain/transactions.py`): a second recipient that routes elsewhere gets
`452 4.5.3` at RCPT, so the reply to DATA is true for every recipient it covers. The policy is
the domain's (`routing` decides routes, `rewrite` what is forwarded, `summary` what the timeline
keeps, `screening` who the sender may be and the abuse rules, `relay_events` the timeline
events, `replies` every answer); this module does the lookups, the sending and the publishing
around it, and `SenderScreen` the authentication's DNS. Mail to a VERP return path is a bounce
or a complaint, never relayed: `BounceIntake` answers and records it. Every forward goes out
DKIM-signed over its final bytes with its own VERP return path (`Outbound`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from worker.adapters.alias_store import AliasRecord
from worker.adapters.smtp import SmtpFailure
from worker.contracts.codec import ValueCodec
from worker.contracts.events import ParticipantRole
from worker.core import metrics
from worker.core.config import ConfigError
from worker.core.offload import off_loop_if_large
from worker.domain import relay_events
from worker.domain.aliases import Clock, Party, is_alias_domain
from worker.domain.bounces import SentMessage
from worker.domain.headers import ParsedMessage
from worker.domain.replies import (
    ALIAS_EXPIRED,
    FORWARDED,
    LOOP_DETECTED,
    NEEDS_OWN_TRANSACTION,
    NOT_AUTHENTICATED,
    RECIPIENT_OK,
    RELAY_DENIED,
    TEMPORARY_FAILURE,
    UNKNOWN_ALIAS,
    UPSTREAM_UNAVAILABLE,
    MessageRejected,
)
from worker.domain.rewrite import Masker, rewrite_for_forward
from worker.domain.routing import (
    AliasView,
    NeedsReverseAlias,
    OrderParties,
    Refusal,
    Route,
    decide_route,
    is_our_own,
    signed_by,
)
from worker.domain.sender_auth import Refused
from worker.domain.summary import MessageSummary, summarize
from worker.domain.transactions import fits_transaction
from worker.services.bounce_intake import BounceIntake
from worker.services.durable import Transient, reply_when_durable
from worker.services.outbound import Outbound
from worker.services.ports import Aliases, Messages, Producer, Upstream
from worker.services.relay_timeline import Closed, RelayTimeline, transient_if_down
from worker.services.screening import Screened, SenderScreen
from worker.services.subjects import Subjects
from worker.services.suppression import CustomerSuppression

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient as RCPT found it, so that DATA need not look it up again."""

    alias: AliasView
    parties: OrderParties
    expires_at: datetime  # the alias's: a forward's return path expires with it


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
        aliases: Aliases,
        messages: Messages,
        smtp: Upstream,
        producer: Producer,
        codec: ValueCodec,
        timeline_topic: str,
        domain: str,
        clock: Clock,
        screen: SenderScreen,
        outbound: Outbound,
        suppression: CustomerSuppression,
        subjects: Subjects | None = None,
    ) -> None:
        self._aliases = aliases
        # Set when the Kafka producer can never send again, or when the SMTP upstream refuses
        # our settings (misconfigured says why): the service stops, the process exits.
        self.broken = asyncio.Event()
        self.misconfigured: ConfigError | None = None
        self._timeline = RelayTimeline(
            producer=producer, codec=codec, topic=timeline_topic, aliases=aliases, clock=clock,
            subjects=subjects, broken=self.broken,
        )  # fmt: skip
        self._messages = messages
        self._screen = screen
        self._outbound = outbound
        self._bounces = BounceIntake(
            addresses=outbound.bounce_addresses, messages=messages, aliases=aliases,
            suppression=suppression, publish=self._timeline.publish, clock=clock,
        )  # fmt: skip
        self._smtp = smtp
        self._domain = domain
        self._clock = clock
        self._in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        address = address.strip().lower()
        if self._bounces.handles(address):
            return await self._bounce_recipient(envelope, address)
        reply, recipient = await self._check_recipient(address, envelope.mail_from or "")
        if recipient is not None and not fits_transaction(envelope.rcpt_tos, address):
            metrics.MESSAGES_REJECTED.labels(reason="own_transaction").inc()
            reply, recipient = NEEDS_OWN_TRANSACTION, None
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
        sender = _Sender.of(session, envelope.mail_from or "")

        async def forward_each() -> str | None:
            # Split once: screening, routing and the rewrite read this one value. More header
            # fields than the relay reads is a permanent refusal (MessageRejected).
            try:
                message = await off_loop_if_large(len(raw), ParsedMessage.parse, raw)
            except MessageRejected as exc:
                metrics.MESSAGES_REJECTED.labels(reason=f"rejected_{exc.code}").inc()
                return exc.text
            # One route per transaction (RCPT saw to it), so this is one forward in practice.
            for address in dict.fromkeys(envelope.rcpt_tos):
                recipient = known.get(address) or await self._resolve(address)
                try:
                    refusal = await self._forward(message, sender, recipient)
                except Closed as exc:
                    return exc.reply
                if refusal is not None:
                    return refusal
            return None

        try:
            bounce = next((a for a in envelope.rcpt_tos if self._bounces.handles(a)), None)
            if bounce is not None:  # a VERP recipient is alone in its transaction (RCPT)
                outcome = await self._bounces.receive(raw, bounce, client_ip=sender.client_ip)
            else:
                outcome = await reply_when_durable(forward_each, accepted=FORWARDED)
        except ConfigError as exc:
            # The upstream refuses our password or certificate: not the sender's fault, so a
            # 4xx (it retries later, once the relay is fixed), and the relay stops taking mail.
            outcome = UPSTREAM_UNAVAILABLE
            self.misconfigured = exc
            self.broken.set()
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self.idle.set()
        log.info(
            "message_relayed" if outcome.startswith("250") else "message_refused",
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
        return TEMPORARY_FAILURE

    async def _bounce_recipient(self, envelope: Envelope, address: str) -> str:
        """RCPT to a VERP address: accepted when it verifies, in a transaction of its own."""
        reply = await self._bounces.check_recipient(address)
        if reply == RECIPIENT_OK and not fits_transaction(envelope.rcpt_tos, address):
            reply = NEEDS_OWN_TRANSACTION
        if reply == RECIPIENT_OK:
            envelope.rcpt_tos.append(address)
        return reply

    async def _check_recipient(self, address: str, mail_from: str) -> tuple[str, Recipient | None]:
        """The RCPT reply, and the recipient when it is accepted."""
        if not is_alias_domain(address, self._domain):
            metrics.MESSAGES_REJECTED.labels(reason="relay_denied").inc()
            return RELAY_DENIED, None
        try:
            record = await transient_if_down(lambda: self._aliases.lookup(address))
            if record is None:
                metrics.MESSAGES_REJECTED.labels(reason="unknown_alias").inc()
                return UNKNOWN_ALIAS, None
            recipient = await self._recipient(record)
            closed = await self._closed(record, recipient, mail_from)
            if closed is not None:
                return closed, None
            # A reverse alias is decided at DATA, after authentication: comparing the envelope
            # with the customer's real address here would answer whether a guess was right.
        except Transient as exc:
            return exc.reply, None
        return RECIPIENT_OK, recipient

    async def _closed(
        self, record: AliasRecord, recipient: Recipient, mail_from: str
    ) -> str | None:
        """The refusal of an alias that takes no more mail, recorded; None when it is open."""
        if record.erased or not recipient.parties.customer.real_address:
            # The order's customer was erased: their conversation takes no more mail, and it
            # answers like an unknown address (the rejection recorded has no personal data).
            metrics.MESSAGES_REJECTED.labels(reason="erased").inc()
            await self._timeline.record_rejection(
                recipient.alias, recipient.parties, mail_from, "erased", participant=False
            )
            return UNKNOWN_ALIAS
        if record.expired(self._clock.now()):
            metrics.MESSAGES_REJECTED.labels(reason="expired").inc()
            await self._timeline.record_rejection(
                recipient.alias, recipient.parties, mail_from, ALIAS_EXPIRED
            )
            return ALIAS_EXPIRED
        return None

    async def _resolve(self, address: str) -> Recipient:
        """A recipient RCPT accepted without leaving what it found (a foreign envelope)."""
        record = await transient_if_down(lambda: self._aliases.lookup(address))
        if record is None:
            raise Transient(TEMPORARY_FAILURE)
        return await self._recipient(record)

    async def _recipient(self, record: AliasRecord) -> Recipient:
        parties = await self._parties(record.order_id)
        return Recipient(self._view(record), parties, record.expires_at)

    async def _forward(  # noqa: PLR0911 - one return per way a forward ends, in their order
        self, message: ParsedMessage, sender: _Sender, recipient: Recipient
    ) -> str | None:
        """Forward to one recipient; None when done, else the SMTP reply that refuses it."""
        target, parties, mail_from = recipient.alias, recipient.parties, sender.mail_from
        structlog.contextvars.bind_contextvars(order_id=target.order_id)
        signed_by_us = signed_by(message.headers("DKIM-Signature"), self._domain)
        header_from = message.header("From")
        if mail_from and (signed_by_us or is_our_own(mail_from, header_from, domain=self._domain)):
            # One of our forwards coming back, however altered: refused before authentication.
            metrics.MESSAGES_REJECTED.labels(reason="loop_or_replay").inc()
            await self._timeline.record_rejection(
                recipient.alias, recipient.parties, mail_from, "loop-or-replay", participant=False
            )
            return LOOP_DETECTED
        screened = await self._screen.screen(
            message, client_ip=sender.client_ip, mail_from=mail_from, helo=sender.helo,
            recipient=target, parties=parties,
        )  # fmt: skip
        if isinstance(screened.outcome, Refused):
            return await self._refuse(recipient, mail_from, screened, screened.outcome)
        accepted = screened.outcome
        structlog.contextvars.bind_contextvars(authentication=accepted.verdicts)

        def route(
            reverse: AliasView | None,
        ) -> Route | NeedsReverseAlias | Refusal:
            return decide_route(
                target, parties, mail_from, header_from, reverse, domain=self._domain,
                sender_verified=accepted.sender_verified, signed_by_us=signed_by_us,
            )  # fmt: skip

        decision = route(None)
        if isinstance(decision, NeedsReverseAlias):
            party = Party(decision.sender_address, decision.sender_name)
            reverse = await transient_if_down(
                lambda: self._aliases.reverse_alias(target.order_id, party)
            )
            decision = route(self._view(reverse))
        if isinstance(decision, Refusal):
            metrics.MESSAGES_REJECTED.labels(reason=f"refused_{decision.code}").inc()
            # Recorded like the screening's refusals: a replay or a sender refused at a reverse
            # alias shows on the order (once per sender, reason and window).
            reason = f"{_refusal_keyword(decision)}; {accepted.verdicts}"
            await self._timeline.record_rejection(
                recipient.alias, recipient.parties, mail_from, reason, participant=False
            )
            return decision.text
        if not isinstance(decision, Route):
            return TEMPORARY_FAILURE
        try:
            forwarded, summary = await off_loop_if_large(
                len(message.raw), _rewrite_and_summarize, message, decision, parties,
                self._domain, screened.authentication_results,
            )  # fmt: skip
        except MessageRejected as exc:
            metrics.MESSAGES_REJECTED.labels(reason=f"rejected_{exc.code}").inc()
            return exc.text
        event = relay_events.forwarded(
            decision, summary, forwarded, at=self._clock.now(), authentication=accepted.verdicts
        )
        structlog.contextvars.bind_contextvars(event_id=event.event_id)
        event = await self._timeline.seal_forward(event)
        sent = SentMessage.of(event, recipient.expires_at)
        sealed = self._outbound.seal(forwarded, sent)
        # The bytes the recipient gets, kept before they go (a retried delivery keeps them
        # once), with what a bounce of them needs.
        await transient_if_down(
            lambda: self._messages.keep(
                event_id=event.event_id,
                order_id=event.order_id,
                store_id=event.store_id,
                raw=sealed.raw,
                sent=sent,
                subject_id=event.subject_id,
            )
        )
        try:
            await self._smtp.send(
                sealed.raw, sender=sealed.return_path, recipients=[decision.deliver_to]
            )
        except SmtpFailure as exc:
            if not exc.permanent:
                raise Transient(UPSTREAM_UNAVAILABLE) from exc
            metrics.MESSAGES_REJECTED.labels(reason="upstream_refused").inc()
            return exc.reply if exc.code >= 500 else TEMPORARY_FAILURE
        await self._timeline.publish(event)
        metrics.MESSAGES_RELAYED.labels(direction=decision.direction.value).inc()
        return None

    async def _refuse(
        self, recipient: Recipient, mail_from: str, screened: Screened, refusal: Refused
    ) -> str:
        """The screening's refusal: counted, recorded (once per window for rate limits), sent."""
        keyword = refusal.reason.split(";", 1)[0].split(" ", 1)[0]
        metrics.MESSAGES_REJECTED.labels(reason=keyword.replace("-", "_")).inc()
        if screened.record:
            await self._timeline.record_rejection(
                recipient.alias,
                recipient.parties,
                mail_from,
                refusal.reason,
                cause=screened.cause,
                participant=False,
            )
        return refusal.reply

    async def _parties(self, order_id: str) -> OrderParties:
        records = await transient_if_down(lambda: self._aliases.of_order(order_id))
        by_role = {r.role: self._view(r) for r in records if r.role is not ParticipantRole.EXTERNAL}
        externals = tuple(self._view(r) for r in records if r.role is ParticipantRole.EXTERNAL)
        if ParticipantRole.CUSTOMER not in by_role or ParticipantRole.STORE not in by_role:
            raise Transient(TEMPORARY_FAILURE)  # aliases half-created by a racing worker
        return OrderParties(
            by_role[ParticipantRole.CUSTOMER], by_role[ParticipantRole.STORE], externals
        )

    def _view(self, record: AliasRecord) -> AliasView:
        return AliasView(
            address=record.address,
            role=record.role,
            order_id=record.order_id,
            store_id=record.store_id,
            real_address=record.real_address,
            display_name=record.name,
            expired=record.expired(self._clock.now()),
        )


@dataclass(frozen=True, slots=True)
class _Sender:
    """What SMTP says of the sending side: the client's address, its HELO name, MAIL FROM."""

    client_ip: str
    helo: str
    mail_from: str

    @classmethod
    def of(cls, session: Session, mail_from: str) -> _Sender:
        peer = session.peer
        client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        return cls(client_ip, session.host_name or "", mail_from)


def _refusal_keyword(refusal: Refusal) -> str:
    """The timeline's reason keyword for a routing refusal (no address, no secret)."""
    return {LOOP_DETECTED: "loop-or-replay", NOT_AUTHENTICATED: "sender-not-authenticated"}.get(
        refusal.text, f"refused-{refusal.code}"
    )


def _rewrite_and_summarize(
    raw: ParsedMessage,
    route: Route,
    parties: OrderParties,
    domain: str,
    authentication_results: str | None,
) -> tuple[bytes, MessageSummary]:
    forwarded = rewrite_for_forward(
        raw, route, parties, domain=domain, authentication_results=authentication_results
    )
    return forwarded, summarize(forwarded, mask=Masker.of(parties, route).text)
