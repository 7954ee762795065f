"""The services built on the in-memory ports, the way the apps/ wiring builds them on the real
ones: `notifier()` and `relay()` return the service and every port, for the test to drive and read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from aiokafka.structs import ConsumerRecord

from tests.helpers import CODEC
from tests.memory.io import MemoryDeadLetters, MemoryProducer, MemoryUpstream
from tests.memory.stores import MemoryAliases, MemoryLedger, MemoryMessages, MemorySuppressions
from tests.support.clock import MovableClock
from worker.adapters.dkim_keys import generate_key
from worker.adapters.kafka import Record
from worker.contracts.events import OrderStatusChanged, TimelineEvent
from worker.domain.abuse import RateLimit, SlidingWindowLimiter
from worker.domain.dkim import DkimSigner, SigningKey
from worker.domain.templates import TemplateRenderer
from worker.domain.verp import BounceAddresses
from worker.services.notify import Notifier
from worker.services.outbound import MailKeys, Outbound
from worker.services.recorded_send import RecordedSender
from worker.services.relay import RelayHandler
from worker.services.screening import SenderScreen
from worker.services.suppression import CustomerSuppression

DOMAIN = "ct.example.com"
TIMELINE = "timeline"
ORDERS = "orders"


@cache
def mail_keys() -> MailKeys:
    """One RSA key per test session (making one takes a tenth of a second)."""
    key = SigningKey("t2026", generate_key("rsa"))
    return MailKeys(DkimSigner(DOMAIN, [key]), BounceAddresses([os.urandom(64)], DOMAIN))


@dataclass
class Ports:
    clock: MovableClock = field(default_factory=lambda: MovableClock(datetime.now(UTC)))
    producer: MemoryProducer = field(default_factory=MemoryProducer)
    upstream: MemoryUpstream = field(default_factory=MemoryUpstream)
    dead_letters: MemoryDeadLetters = field(default_factory=MemoryDeadLetters)
    records: MemorySuppressions = field(
        default_factory=lambda: MemorySuppressions(store_wide=False)
    )

    def __post_init__(self) -> None:
        self.aliases = MemoryAliases(self.clock, domain=DOMAIN)
        self.messages = MemoryMessages(self.clock)
        self.ledger = MemoryLedger(self.messages)
        self.suppression = CustomerSuppression(self.records, self.aliases, store_wide=False)
        self.outbound = Outbound(mail_keys())

    def timeline(self) -> list[TimelineEvent]:
        return self.producer.events(CODEC, TIMELINE)


def notifier(ports: Ports) -> Notifier:
    return Notifier(
        codec=CODEC, aliases=ports.aliases, messages=ports.messages,
        renderer=TemplateRenderer(None),
        sender=RecordedSender(ports.upstream, ports.ledger, max_delay=0.01),
        outbound=ports.outbound, suppression=ports.suppression, producer=ports.producer,
        dead_letters=ports.dead_letters, timeline_topic=TIMELINE, domain=DOMAIN, concurrency=8,
        max_delay=0.01,
    )  # fmt: skip


def relay(ports: Ports) -> RelayHandler:
    """The relay with sender authentication off (no DNS): the headers say who writes."""
    limiter = SlidingWindowLimiter([RateLimit("alias", 0, 3600.0)])
    return RelayHandler(
        aliases=ports.aliases, messages=ports.messages, smtp=ports.upstream,
        producer=ports.producer, codec=CODEC, timeline_topic=TIMELINE, domain=DOMAIN,
        clock=ports.clock, screen=SenderScreen(authenticator=None, limiter=limiter,
        authserv_id=DOMAIN), outbound=ports.outbound, suppression=ports.suppression,
    )  # fmt: skip


def record(event: OrderStatusChanged | bytes, offset: int = 0) -> Record:
    """A consumed order-status record, as aiokafka hands it to the handler."""
    value = event if isinstance(event, bytes) else CODEC.encode(event)
    key = None if isinstance(event, bytes) else event.order_id.encode()
    return ConsumerRecord(
        ORDERS, 0, offset, 0, 0, key, value, None, len(key or b""), len(value), []
    )
