"""`ct run notifier`: the Notifier (services/notify.py) wired to Kafka, MongoDB and the SMTP
upstream, consuming order-status events until stopped."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from worker.adapters import mongo
from worker.adapters.batch_consumer import BatchConsumer, consume
from worker.adapters.dead_letters import DeadLetters
from worker.adapters.kafka import make_producer, require_topics
from worker.adapters.smtp import SmtpPool
from worker.apps.builder import Stores
from worker.contracts.codec import ValueCodec
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.core.service import Service
from worker.domain.templates import TemplateRenderer
from worker.services.notify import COMPONENT, Notifier
from worker.services.outbound import MailKeys, Outbound
from worker.services.recorded_send import RecordedSender
from worker.services.retention import run_when_due
from worker.services.subjects import DeadLetterSeal

log = structlog.get_logger(__name__)
# The next poll is handled while the previous one's last emails and its commit finish: an event
# waits for the emails ahead of it, not for a whole batch to end. Two are enough to keep the
# pipeline full; more would only hold more uncommitted work (redelivered after a kill, and
# found in the ledger) and more memory.
POLLS_IN_FLIGHT = 2


class NotifierService(Service):
    name = COMPONENT

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
        self._consumer: BatchConsumer | None = None

    def is_ready(self) -> bool:
        return self._consumer is not None and self._consumer.ready

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        client = mongo.connect(settings, app_name="ct-notifier")
        producer = make_producer(settings, "ct-notifier")
        smtp = SmtpPool.from_settings(settings)
        retention: asyncio.Task[None] | None = None
        try:
            db = client[settings.mongo_db]
            dialect = await mongo.prepare(db, settings.mongo_dialect)
            stores = Stores(db, dialect, settings, self._cipher)
            # Daily for the deployment: the notifier that claims the day's run does it.
            retention = asyncio.create_task(
                run_when_due(
                    stores.retention, stores.schedules, clock=stores.clock, operator=COMPONENT
                ),
                name="retention",
            )
            await producer.start()
            # Refused settings stop the worker now, before it takes a single event.
            await require_topics(settings, [settings.topic_timeline, settings.topic_dlq])
            await smtp.check()
            # With CT_SCHEMA_FRAMING=confluent: the registry's id of the timeline schema.
            await self._codec.start()
            notifier = Notifier(
                codec=self._codec,
                aliases=stores.aliases,
                messages=stores.messages,
                renderer=TemplateRenderer(settings.templates_dir),
                sender=RecordedSender(
                    smtp,
                    stores.ledger,
                    max_unrecorded=settings.notifier_max_unrecorded,
                    max_delay=settings.retry_max_delay_s,
                ),
                outbound=Outbound(self._keys),
                suppression=stores.suppression,
                producer=producer,
                dead_letters=DeadLetters(
                    producer,
                    settings.topic_dlq,
                    COMPONENT,
                    settings.retry_max_delay_s,
                    seal=DeadLetterSeal(self._codec, stores.subject_keys).seal,
                ),
                timeline_topic=settings.topic_timeline,
                domain=settings.domain,
                concurrency=settings.notifier_concurrency,
                max_delay=settings.retry_max_delay_s,
                subjects=stores.subjects,
            )
            self._consumer = consume(
                settings,
                settings.topic_order_status,
                settings.group_notifier,
                notifier.handle,
                name=COMPONENT,
                in_flight=POLLS_IN_FLIGHT,
            )
            await self._consumer.run(stopping)
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await smtp.close()
            await producer.stop()
            await client.close()
