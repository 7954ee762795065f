"""The notifier's use case: order-status events become emails sent through the order's aliases.

Per batch, orders run concurrently (bounded) and each order's events strictly in order. Each
email is rendered, sealed (`Outbound`), sent, and kept whole in the message store together with
the outcome of its send, in one write, by `RecordedSender`, the owner of "no duplicate email"
(the console shows the message, a bounce finds it); `CustomerSuppression` decides whether a
customer is emailed at all. The outcome's timeline events go to Kafka; a record that cannot be
processed is dead-lettered.
For stores on the orderFlow expiry policy each status event moves the order's alias window.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from worker.adapters import mongo
from worker.adapters.alias_store import AliasRecord
from worker.adapters.alias_writes import NewOrder
from worker.adapters.deliveries import Delivery
from worker.adapters.kafka import (
    PRODUCER_BROKEN,
    Record,
)
from worker.adapters.kafka import is_transient as kafka_transient
from worker.adapters.kafka_client import PERMANENT_ERRORS
from worker.adapters.messages import SealedMessage
from worker.adapters.smtp import SmtpFailure
from worker.adapters.smtp import is_transient as smtp_transient
from worker.adapters.suppressions import Suppression
from worker.contracts.codec import DecodeError, ValueCodec
from worker.contracts.events import (
    DeliveryReport,
    OrderStatus,
    OrderStatusChanged,
    ParticipantRole,
    TimelineEvent,
)
from worker.core import metrics
from worker.core.config import ConfigError
from worker.core.retry import retry_transient
from worker.domain import notifications
from worker.domain.bounces import SentMessage, private_terms, smtp_reply_report
from worker.domain.errors import Unprocessable
from worker.domain.notifications import notification_event_id, notification_parties
from worker.domain.personal import is_erased
from worker.domain.templates import TemplateRenderer
from worker.services.outbound import Outbound
from worker.services.ports import Aliases, DeadLetterSink, Messages, Producer
from worker.services.recorded_send import RecordedSender
from worker.services.subjects import Seal, Subjects
from worker.services.suppression import CustomerSuppression

log = structlog.get_logger(__name__)
COMPONENT = "notifier"
SUPPRESSED = "suppressed"  # the reason of a notification not sent to a bouncing address
ERASED = "erased"  # the reason of a notification not sent: its customer asked to be erased
TERMINAL = frozenset({OrderStatus.DELIVERED, OrderStatus.CANCELED})
AliasPair = tuple[AliasRecord, AliasRecord]
T = TypeVar("T")
NOT_THIS_EVENTS_FAULT = (*PRODUCER_BROKEN, *PERMANENT_ERRORS, ConfigError)


class Notifier:
    """Per batch: orders run concurrently (bounded), each order's events strictly in order."""

    def __init__(
        self,
        *,
        codec: ValueCodec,
        aliases: Aliases,
        messages: Messages,
        renderer: TemplateRenderer,
        sender: RecordedSender,
        outbound: Outbound,
        suppression: CustomerSuppression,
        producer: Producer,
        dead_letters: DeadLetterSink,
        timeline_topic: str,
        domain: str,
        concurrency: int,
        max_delay: float,
        subjects: Subjects | None = None,
    ) -> None:
        self._codec = codec
        # Seals each timeline event's personal fields before it is kept or published; None only
        # in tests of other concerns.
        self._subjects = subjects
        self._aliases = aliases
        self._messages = messages
        self._renderer = renderer
        self._sender = sender
        self._outbound = outbound
        self._suppression = suppression
        self._producer = producer
        self._dead_letters = dead_letters
        self._timeline_topic = timeline_topic
        self._domain = domain
        self._slots = asyncio.Semaphore(concurrency)
        # Each order's run in the latest poll that holds it, while it runs.
        self._runs: dict[str, _OrderRun] = {}
        self._admission = asyncio.Lock()
        self._max_delay = max_delay

    async def handle(self, records: Sequence[Record]) -> None:
        """One poll. Polls may overlap (the consumer runs the next while this one ends): an
        order in both runs its events here after the earlier poll's, with what that one knew."""
        async with self._admission:  # runs are chained in poll order, whatever decoding awaits
            by_order = await self._decoded(records)
            runs = {order_id: self._chain(order_id) for order_id in by_order}
        if not by_order:
            return
        try:
            done, suppressions = await self._read_poll(by_order, runs)
            await _all_or_none(
                [
                    self._run_order(runs[order_id], items, done, suppressions[order_id])
                    for order_id, items in by_order.items()
                ]
            )
        except BaseException as exc:
            # Every run not ended yet (one cancelled before it started, say) ends with this
            # error, so that the next poll's run of its order does not wait for it forever.
            for run in runs.values():
                run.end(exc)
            raise

    async def _decoded(
        self, records: Sequence[Record]
    ) -> dict[str, list[tuple[Record, OrderStatusChanged]]]:
        by_order: dict[str, list[tuple[Record, OrderStatusChanged]]] = defaultdict(list)
        seen: set[str] = set()
        for record in records:
            try:
                event = await self._codec.read(record.value, record.headers, OrderStatusChanged)
            except DecodeError as exc:
                await self._dead_letters.publish(record, exc.reason)
                continue
            # The same event twice in one batch (a producer retry): the first one covers both.
            if event.event_id not in seen:
                seen.add(event.event_id)
                by_order[event.order_id].append((record, event))
        return by_order

    def _chain(self, order_id: str) -> _OrderRun:
        """This poll's run of the order, after the earlier poll's run if that one is running."""
        earlier = self._runs.get(order_id)
        state = earlier.state if earlier is not None else _OrderState(pair=None, suppression=None)
        run = _OrderRun(state, asyncio.get_running_loop().create_future(), earlier)
        self._runs[order_id] = run
        run.finished.add_done_callback(lambda _: self._unchain(order_id, run))
        return run

    def _unchain(self, order_id: str, run: _OrderRun) -> None:
        if self._runs.get(order_id) is run:
            del self._runs[order_id]

    async def _read_poll(
        self,
        by_order: Mapping[str, list[tuple[Record, OrderStatusChanged]]],
        runs: Mapping[str, _OrderRun],
    ) -> tuple[Mapping[str, Delivery], Mapping[str, Suppression | None]]:
        """The ledger, the suppressions and the aliases read for the whole poll (with `$in`
        where the server serves it from its index), and the new orders' aliases made together:
        a constant number of reads and writes, not three reads and six inserts per order. An
        order still running in an earlier poll made its aliases there."""
        new = {o: items for o, items in by_order.items() if runs[o].earlier is None}
        done, suppressions, _ = await asyncio.gather(
            self._sender.outcomes([e.event_id for items in by_order.values() for _, e in items]),
            self._mongo(
                lambda: self._suppression.in_force_for_orders(
                    {
                        order_id: (items[0][1].store_id, items[0][1].customer.email)
                        for order_id, items in by_order.items()
                    }
                ),
                "suppressions.in_force",
            ),
            self._prepare_orders(new),
        )
        return done, suppressions

    async def _prepare_orders(
        self, by_order: Mapping[str, list[tuple[Record, OrderStatusChanged]]]
    ) -> None:
        """The poll's new orders' aliases, made together. Only a shortcut: should it fail, each
        order's first email makes its own (`order_pair`), and its failure is that event's."""
        try:
            await self._mongo(
                lambda: self._aliases.prepare_orders(_new_orders(by_order)),
                "aliases.prepare_orders",
            )
        except NOT_THIS_EVENTS_FAULT:
            raise
        except Exception:
            log.exception("orders_not_prepared")

    async def _run_order(
        self,
        run: _OrderRun,
        items: list[tuple[Record, OrderStatusChanged]],
        done: Mapping[str, Delivery],
        suppression: Suppression | None,
    ) -> None:
        order = run.state
        try:
            if run.earlier is not None:
                # Its failure is this run's too: a later event is never sent before an earlier.
                await asyncio.shield(run.earlier.finished)
                run.earlier = None
            order.suppression = order.suppression or suppression
            for record, event in items:
                # The ledger was read before an earlier poll's run of this order recorded its
                # outcomes: a redelivered event sent there is found in what that run kept.
                recorded = done.get(event.event_id) or order.delivered.get(event.event_id)
                async with self._slots:
                    await self._process(record, event, recorded, order)
        except BaseException as exc:
            run.end(exc)
            raise
        run.end(None)

    async def _process(
        self,
        record: Record,
        event: OrderStatusChanged,
        delivery: Delivery | None,
        order: _OrderState,
    ) -> None:
        """Email one event (unless the ledger has its outcome) and publish its timeline events."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(order_id=event.order_id, event_id=event.event_id)
        started = time.perf_counter()
        try:
            outcome = "redelivered" if delivery else "sent"
            await self._mongo(
                lambda: self._aliases.follow_status(
                    event.order_id,
                    event.store_id,
                    terminal=event.status in TERMINAL,
                    at=event.occurred_at,
                ),
                "aliases.follow_status",
            )
            if delivery is None:
                suppressed = order.suppression is not None
                delivery = await self._deliver(event, order)
                outcome = "suppressed" if suppressed else "sent" if delivery.sent else "failed"
            order.delivered[event.event_id] = delivery
            await self._publish([TimelineEvent.model_validate(r) for r in delivery.timeline])
        except Unprocessable as exc:
            outcome = "dead_lettered"
            await self._dead_letters.publish(record, str(exc))
        except NOT_THIS_EVENTS_FAULT:
            # A broken producer, a refused password, certificate or ACL: the process exits,
            # commits nothing past this event, and its restart (or the fix) sends it then.
            raise
        except Exception as exc:
            # A bug, not bad data: dead-letter the event (replayable once fixed) instead of
            # crash-looping on it. The reason names the error type only: messages may hold data.
            log.exception("event_failed")
            outcome = "dead_lettered"
            await self._dead_letters.publish(record, f"internal error: {type(exc).__name__}")
        metrics.EVENTS_CONSUMED.labels(consumer=COMPONENT, outcome=outcome).inc()
        log.info(
            "event_processed",
            status=event.status.value,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _deliver(self, event: OrderStatusChanged, order: _OrderState) -> Delivery:
        """Send the event's email and record its outcome; Unprocessable when it can have none.

        Not sent when the customer's address bounced hard: DELIVERY_FAILED, reason `suppressed`.
        """
        rendered = self._renderer.render(event)
        customer, store = notification_parties(event)
        if order.pair is None:
            order.pair = await self._mongo(
                lambda: self._aliases.order_pair(event.order_id, event.store_id, customer, store),
                "aliases.order_pair",
            )
        customer_alias, store_alias = order.pair
        if order.seal is None:
            order.seal = await self._sealer(event.order_id)
        seal = order.seal
        prepared = notifications.prepare(
            event,
            rendered,
            store_alias=store_alias.address,
            customer_alias=customer_alias.address,
            domain=self._domain,
        )
        if customer_alias.erased:
            # The order's customer was erased: their later status events email nobody.
            return await self._record(prepared, seal, failure=ERASED)
        if order.suppression is not None:
            report = self._suppression.not_sent_report(order.suppression)
            return await self._record(prepared, seal, failure=SUPPRESSED, delivery=report)
        outcome = seal(prepared.outcome(at=datetime.now(UTC)))
        if is_erased(outcome):  # erased since this worker cached the order's aliases
            return await self._record(prepared, seal, failure=ERASED)
        sent = SentMessage.of(outcome, customer_alias.expires_at)
        sealed = self._outbound.seal(prepared.raw, sent)
        prepared = replace(prepared, raw=sealed.raw)
        # Sealed now, kept with the send's outcome under its outcome's event id: the email and
        # its ledger record are one write. Sent or refused, the console shows what was sent and
        # a bounce finds the message it is about; a kill before that write re-sends it.
        kept = await self._mongo(
            lambda: self._messages.seal(
                event_id=prepared.outcome_event_id,
                order_id=event.order_id,
                store_id=event.store_id,
                raw=prepared.raw,
                sent=sent,
                subject_id=outcome.subject_id,
            ),
            "messages.seal",  # the subject's key may be read
        )
        try:
            delivery = await retry_transient(
                lambda: self._sender.send_recorded(
                    sealed.raw,
                    sender=sealed.return_path,
                    recipient=customer.address,
                    kept=kept,
                    outcome=lambda: _outcome(prepared, seal, failure=None),
                ),
                name="smtp.send",
                is_transient=smtp_transient,
                max_delay=self._max_delay,
            )
        except SmtpFailure as exc:
            metrics.EMAILS_FAILED.labels(kind="permanent").inc()
            return await self._refused(prepared, kept, exc.reply, customer.address, order)
        metrics.EMAILS_SENT.inc()
        return delivery

    async def _refused(
        self,
        prepared: notifications.PreparedNotification,
        kept: SealedMessage,
        reply: str,
        customer_address: str,
        order: _OrderState,
    ) -> Delivery:
        """The upstream refused for good: the email kept with its reply, addresses removed; a
        refusal that says the address does not exist suppresses it like a bounce would."""
        report = smtp_reply_report(reply, private_terms(customer_address))
        seal = order.seal or _unsealed
        outcome = _outcome(prepared, seal, failure=report.diagnostic, delivery=report)
        delivery = await self._sender.record_sent(outcome, kept)
        event = prepared.event
        started = await self._mongo(
            lambda: self._suppression.after_failure(
                report,
                to=ParticipantRole.CUSTOMER,
                order_id=event.order_id,
                store_id=event.store_id,
                address=customer_address,
                cause_event_id=notification_event_id(event.event_id),
                at=delivery.at,
            ),
            "suppressions.after_failure",
        )
        if started is not None:
            order.suppression = started  # the order's later events in this batch wait too
        return delivery

    async def _record(
        self,
        prepared: notifications.PreparedNotification,
        seal: Seal,
        *,
        failure: str | None,
        delivery: DeliveryReport | None = None,
    ) -> Delivery:
        """The outcome in the ledger; a redelivered event finds it there and is not re-sent."""
        outcome = _outcome(prepared, seal, failure=failure, delivery=delivery)
        return await self._sender.record(outcome)

    async def _sealer(self, order_id: str) -> Seal:
        """What seals the order's timeline events (its customer's key, from the cache): the
        ledger, the message store and Kafka only ever see them sealed."""
        subjects = self._subjects
        if subjects is None:
            return _unsealed
        return await self._mongo(lambda: subjects.sealer(order_id), "subjects.key")

    async def _publish(self, events: list[TimelineEvent]) -> None:
        async def send_all() -> None:
            futures = [
                await self._producer.send(
                    self._timeline_topic, key=e.order_id.encode(), value=self._codec.encode(e)
                )
                for e in events
            ]
            await asyncio.gather(*futures)

        await retry_transient(
            send_all, name="kafka.timeline", is_transient=kafka_transient, max_delay=self._max_delay
        )

    async def _mongo(self, operation: Callable[[], Awaitable[T]], name: str) -> T:
        return await retry_transient(
            operation,
            name=f"mongo.{name}",
            is_transient=mongo.is_transient,
            max_delay=self._max_delay,
        )


async def _all_or_none(runs: list[Coroutine[Any, Any, None]]) -> None:
    """Run them side by side; on the first error, cancel the others and wait for them, then
    raise it. Not gather, whose other runs go on sending after it raised, while the worker
    closes its clients: an email accepted then could not be recorded and would be re-sent.
    Not a TaskGroup either: its ExceptionGroup would hide the error the worker exits on."""
    tasks = [asyncio.ensure_future(run) for run in runs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a cancelled send still records what its upstream accepted
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


def _new_orders(
    by_order: Mapping[str, list[tuple[Record, OrderStatusChanged]]],
) -> dict[str, NewOrder]:
    """What each order's aliases would be made of, from its first event; an order whose
    addresses are unusable is left out (its events are dead-lettered one by one)."""
    orders = {}
    for order_id, items in by_order.items():
        event = items[0][1]
        try:
            customer, store = notification_parties(event)
        except Unprocessable:
            continue
        orders[order_id] = NewOrder(event.store_id, customer, store)
    return orders


def _unsealed(event: TimelineEvent) -> TimelineEvent:
    return event


def _outcome(
    prepared: notifications.PreparedNotification,
    seal: Seal,
    *,
    failure: str | None,
    delivery: DeliveryReport | None = None,
) -> Delivery:
    """The ledger's record of an event's outcome, now, with the timeline events it publishes."""
    at = datetime.now(UTC)
    return Delivery(
        event_id=prepared.event.event_id,
        order_id=prepared.event.order_id,
        sent=failure is None,
        at=at,
        timeline=[
            seal(e).to_record()
            for e in prepared.timeline(at=at, failure=failure, delivery=delivery)
        ],
    )


@dataclass
class _OrderState:
    """What an order's events share within a batch, and with the next poll's while it runs."""

    pair: AliasPair | None
    suppression: Suppression | None
    seal: Seal | None = None
    delivered: dict[str, Delivery] = field(default_factory=dict)


@dataclass
class _OrderRun:
    """One poll's events of one order; `earlier` is the run they wait for."""

    state: _OrderState
    finished: asyncio.Future[None]
    earlier: _OrderRun | None

    def end(self, error: BaseException | None) -> None:
        if self.finished.done():
            return
        if error is None:
            self.finished.set_result(None)
        elif isinstance(error, asyncio.CancelledError):
            self.finished.cancel()
        else:
            self.finished.set_exception(error)
            self.finished.exception()  # retrieved: whoever waits on it raises it again
