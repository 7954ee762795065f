"""Mail to a VERP address (`bounces+<token>@CT_DOMAIN`): bounces and complaints, never relayed.

The relay hands such recipients here instead of looking them up as aliases. A token that does
not verify (forged, expired, malformed) or names no message we sent is refused at RCPT with
550 5.1.1 and recorded nowhere: no backscatter, and nobody can write into a timeline. A verified
report becomes a timeline entry on the order of the message it is about, and its failure goes
to `CustomerSuppression` (a hard bounce of mail to a customer suppresses that address). The
answer to DATA is `reply_when_durable`'s: 250 once the entry (and the suppression) are durable,
451 when MongoDB or Kafka fails, so that the reporting server keeps the report and retries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from worker.adapters import mongo
from worker.adapters.alias_store import AliasRecord
from worker.contracts.events import ParticipantRole, TimelineEvent
from worker.core import metrics
from worker.core.offload import off_loop_if_large
from worker.domain.abuse import OverLimit, RateKeys, RateLimit, SlidingWindowLimiter
from worker.domain.aliases import Clock
from worker.domain.bounces import Bounce, SentMessage, failure_event, private_terms, read_report
from worker.domain.replies import (
    RATE_LIMITED,
    RECIPIENT_OK,
    REPORT_RECEIVED,
    TEMPORARY_FAILURE,
    UNKNOWN_ALIAS,
)
from worker.domain.verp import BounceAddresses, BounceRef
from worker.services.durable import reply_when_durable
from worker.services.ports import Aliases, Messages
from worker.services.suppression import CustomerSuppression

log = structlog.get_logger(__name__)
# Reports per hour: one return path names one message, which a server reports a few times at
# most (delayed, then failed); one client IP may be a large provider's MX reporting for many.
REPORTS_PER_RETURN_PATH: Final = 5
REPORTS_PER_IP: Final = 500
REPORT_WINDOW_S: Final = 3600.0
Publish = Callable[[TimelineEvent], Awaitable[None]]


class BounceIntake:
    def __init__(
        self,
        *,
        addresses: BounceAddresses,
        messages: Messages,
        aliases: Aliases,
        suppression: CustomerSuppression,
        publish: Publish,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._addresses = addresses
        self._messages = messages
        self._aliases = aliases
        self._suppression = suppression
        self._publish = publish
        self._clock = clock
        self._limiter = SlidingWindowLimiter(
            [
                RateLimit("alias", REPORTS_PER_RETURN_PATH, REPORT_WINDOW_S),
                RateLimit("ip", REPORTS_PER_IP, REPORT_WINDOW_S),
            ]
        )
        self._now = monotonic

    def handles(self, recipient: str) -> bool:
        """Whether `recipient` is for us to answer (it has the form of a VERP address)."""
        return self._addresses.is_bounce_address(recipient)

    async def check_recipient(self, recipient: str) -> str:
        """RCPT: OK for a verified address of a message we sent, else 550 5.1.1."""
        try:
            return RECIPIENT_OK if await self._sent_message(recipient) else UNKNOWN_ALIAS
        except Exception as exc:
            if mongo.is_transient(exc):
                return TEMPORARY_FAILURE
            raise

    async def receive(self, raw: bytes, recipient: str, *, client_ip: str = "") -> str:
        """DATA for one VERP recipient: record the report it carries; returns the SMTP reply.

        Reports are limited per return path and per client IP (`REPORTS_PER_RETURN_PATH`,
        `REPORTS_PER_IP`): a genuine mail server sends one or two per message, a flood gets 451
        and records nothing.
        """
        over = self._limiter.admit(RateKeys(recipient, ip=client_ip or None), now=self._now())
        if isinstance(over, OverLimit):
            metrics.BOUNCES_RECEIVED.labels(outcome="rate_limited").inc()
            log.info("report_rate_limited", scope=over.scope)
            return RATE_LIMITED
        return await reply_when_durable(
            lambda: self._record(raw, recipient), accepted=REPORT_RECEIVED
        )

    async def _record(self, raw: bytes, recipient: str) -> str | None:
        """The report's timeline entry published and its suppression stored; a refusal, if any."""
        sent = await self._sent_message(recipient)
        if sent is None:  # expired between RCPT and DATA
            return UNKNOWN_ALIAS
        structlog.contextvars.bind_contextvars(order_id=sent.order_id)
        recipient_alias = await self._recipient(sent)
        real = recipient_alias.real_address if recipient_alias else ""
        sent_to = self._aliases.address_hash(real) if real else None

        def is_recipient(address: str) -> bool:
            return sent_to is not None and self._aliases.address_hash(address) == sent_to

        report = await off_loop_if_large(
            len(raw), read_report, raw, private=private_terms(real) if real else (),
            is_recipient=is_recipient,
        )  # fmt: skip
        if report is None:
            # An auto-reply to the return path, say: nothing to record, nothing to bounce.
            metrics.BOUNCES_RECEIVED.labels(outcome="not_a_report").inc()
            log.info("report_not_recognised", size_bytes=len(raw))
            return None
        event = failure_event(report, sent, self._clock.now())
        # A bounce that names another address as the one that failed (or none) is recorded
        # but suppresses nobody: anyone who sees a return path can post one, and it cannot know
        # the address behind it (keyed hashes compared, `is_recipient`).
        trusted = not isinstance(report, Bounce) or report.names_recipient
        if event.delivery is not None and trusted:
            await self._suppression.after_failure(
                event.delivery,
                to=sent.message.to.role,
                order_id=sent.order_id,
                store_id=sent.store_id,
                address=real,
                cause_event_id=event.event_id,
                at=event.occurred_at,
            )
        await self._publish(event)
        outcome = event.delivery.failure_type.value.lower() if event.delivery else "unknown"
        metrics.BOUNCES_RECEIVED.labels(outcome=outcome).inc()
        log.info(
            "report_recorded",
            event_id=event.event_id,
            kind=event.kind.value,
            failure_type=outcome,
            status=event.delivery.status if event.delivery else None,
        )
        return None

    async def _recipient(self, sent: SentMessage) -> AliasRecord | None:
        """The alias the message went to. The order's customer or store alias is found by its
        order and role: on a soft-masked order the customer's alias is sealed in what was kept
        (worker/domain/personal.py), so it cannot be looked up by address."""
        to = sent.message.to
        if to.role is ParticipantRole.EXTERNAL:
            return await self._aliases.lookup(to.alias)
        return next(
            (r for r in await self._aliases.of_order(sent.order_id) if r.role is to.role), None
        )

    async def _sent_message(self, recipient: str) -> SentMessage | None:
        ref = self._addresses.verify(recipient, self._clock.now())
        if not isinstance(ref, BounceRef):
            metrics.BOUNCES_RECEIVED.labels(outcome=ref.reason).inc()
            log.info("bounce_address_refused", reason=ref.reason)
            return None
        sent = await self._messages.sent(ref.message_event_id)
        if sent is None:
            metrics.BOUNCES_RECEIVED.labels(outcome="unknown_message").inc()
            log.info("bounce_address_refused", reason="unknown_message")
        return sent
