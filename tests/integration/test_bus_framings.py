"""Order-status events in every framing an OMS's bus carries, against the real Apicurio
Registry (deploy/local/stack up registry), Kafka, FerretDB and an SMTP capture server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Capture
from tests.helpers import CODEC, read_topic, running
from tests.support.bus import (
    ORDER_STATUS_AVSC,
    Headers,
    RegistryProducer,
    TcpGate,
    apicurio_8_byte,
    apicurio_headers,
    avro_body,
    cloudevent,
    confluent,
    produce_framed,
)
from tests.support.events import order_event
from tests.support.kafka import committed, topic_size
from tests.support.polling import eventually
from worker.adapters.event_wire import EventWire
from worker.apps.notifier import NotifierService
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.services.outbound import MailKeys

pytestmark = pytest.mark.stack
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "schemas"
NEWER = FIXTURES / "order_status.newer.avsc"  # v2: a RETURNED status, an optional `channel`
INCOMPATIBLE = FIXTURES / "incompatible" / "order_status.avsc"  # orderId a long


def _notifier(settings: Settings) -> NotifierService:
    return NotifierService(
        settings, EventWire(settings), AddressCipher(settings.data_keys()), MailKeys.load(settings)
    )


def _event(order: str, n: int) -> OrderStatusChanged:
    return order_event(order, OrderStatus.SHIPPED, customer_email=f"c.{n}@example.org")


async def _reasons(settings: Settings, want: int) -> list[str]:
    dead = await read_topic(settings, settings.topic_dlq, want=want)
    return sorted(dict(r.headers)["ct.dlq.reason"].decode() for r in dead)


async def test_each_framing_of_an_order_status_event_becomes_an_email(
    topics: Settings, with_capture: Settings, capture: Capture, registry_url: str
) -> None:
    """Single-object, Confluent, Apicurio's 8-byte id and header id, CloudEvents binary and
    structured (made by the `cloudevents` SDK): one of each, one email each, nothing refused."""
    settings = with_capture.model_copy(update={"schema_registry_url": registry_url})
    oms = RegistryProducer(registry_url)
    first = await oms.register(f"{settings.topic_order_status}-value", ORDER_STATUS_AVSC)
    # The same schema under a second subject: a new global id, the same content id, so that
    # the global-id framings cannot be read by looking their id up as a ccompat id by chance.
    other = await oms.register(f"{settings.topic_order_status}-other-value", ORDER_STATUS_AVSC)
    assert other.global_id != first.global_id and other.schema_id == first.schema_id
    events = {name: _event(f"o-{name}", n) for n, name in enumerate(
        ["single-object", "confluent", "apicurio-8-byte", "apicurio-headers", "ce-binary",
         "ce-structured"]
    )}  # fmt: skip

    def body(name: str) -> bytes:
        return avro_body(ORDER_STATUS_AVSC, events[name].to_record())

    framed: dict[str, tuple[bytes, Headers]] = {
        "single-object": (CODEC.encode(events["single-object"]), []),
        "confluent": (confluent(first.schema_id, body("confluent")), []),
        "apicurio-8-byte": (apicurio_8_byte(other.global_id, body("apicurio-8-byte")), []),
        "apicurio-headers": (body("apicurio-headers"), apicurio_headers(other.global_id)),
        "ce-binary": cloudevent(events["ce-binary"], structured=False),
        "ce-structured": cloudevent(events["ce-structured"], structured=True),
    }
    await produce_framed(
        settings,
        settings.topic_order_status,
        [(events[name].order_id, value, headers) for name, (value, headers) in framed.items()],
    )
    async with running(_notifier(settings)):
        await eventually(lambda: len(capture.messages()) == len(events), what="6 emails")
        await eventually(
            lambda: committed(settings, settings.topic_order_status, settings.group_notifier),
            what="offsets committed",
        )
    assert sorted(m["rcptTos"][0] for m in capture.messages()) == [
        f"c.{n}@example.org" for n in range(len(events))
    ]
    assert await topic_size(settings, settings.topic_dlq) == 0


async def test_a_v2_writer_with_a_new_optional_field_is_read_by_todays_reader(
    topics: Settings, with_capture: Settings, capture: Capture, registry_url: str
) -> None:
    """Schema evolution through the registry: v2 registered after v1 (BACKWARD), its records
    resolve against order_status.avsc; the new field is dropped, the rest arrives."""
    settings = with_capture.model_copy(update={"schema_registry_url": registry_url})
    oms = RegistryProducer(registry_url)
    subject = f"{settings.topic_order_status}-value"
    await oms.register(subject, ORDER_STATUS_AVSC)
    v2 = await oms.register(subject, NEWER)
    event = _event("o-v2", 7)
    record = {**event.to_record(), "channel": "web"}
    await produce_framed(
        settings,
        settings.topic_order_status,
        [(event.order_id, confluent(v2.schema_id, avro_body(NEWER, record)), [])],
    )
    async with running(_notifier(settings)):
        await eventually(lambda: len(capture.messages()) == 1, what="the v2 event's email")
    assert capture.messages()[0]["rcptTos"] == ["c.7@example.org"]
    assert await topic_size(settings, settings.topic_dlq) == 0


async def test_an_unknown_id_and_an_incompatible_writer_are_dead_letters_with_reasons(
    topics: Settings, with_capture: Settings, capture: Capture, registry_url: str
) -> None:
    """Retrying cannot help either: each goes to the DLQ naming its id, and the event after
    them in the same partition is emailed."""
    settings = with_capture.model_copy(update={"schema_registry_url": registry_url})
    oms = RegistryProducer(registry_url)
    # Under a subject of its own (no compatibility rule there), as a careless producer would.
    bad = await oms.register(f"{settings.topic_order_status}-bad-value", INCOMPATIBLE)
    good = await oms.register(f"{settings.topic_order_status}-value", ORDER_STATUS_AVSC)
    event = _event("o-1", 1)
    incompatible = {**event.to_record(), "orderId": 42}
    unknown_id = 2**31 - 7
    await produce_framed(
        settings,
        settings.topic_order_status,
        [
            ("o-1", confluent(unknown_id, avro_body(ORDER_STATUS_AVSC, event.to_record())), []),
            ("o-1", confluent(bad.schema_id, avro_body(INCOMPATIBLE, incompatible)), []),
            ("o-1", confluent(good.schema_id, avro_body(ORDER_STATUS_AVSC, event.to_record())), []),
        ],
    )
    async with running(_notifier(settings)):
        await eventually(lambda: len(capture.messages()) == 1, timeout=60, what="the good email")
        reasons = await _reasons(settings, want=2)
    assert reasons[0].startswith(f"confluent record: schema id {unknown_id} is not in the")
    assert f"registry schema id {bad.schema_id} cannot be read as order_status.avsc" in reasons[1]


async def test_with_the_registry_down_the_events_wait_and_none_is_lost(
    topics: Settings, with_capture: Settings, capture: Capture, registry_url: str
) -> None:
    """An unreachable registry is transient: nothing is emailed, dead-lettered or committed
    while it is down; once it answers, every event is emailed."""
    oms = RegistryProducer(registry_url)
    registered = await oms.register(f"{topics.topic_order_status}-value", ORDER_STATUS_AVSC)
    gate = TcpGate(urlsplit(registry_url).port or 80)
    gated = registry_url.replace(f":{urlsplit(registry_url).port}", f":{gate.port}")
    settings = with_capture.model_copy(update={"schema_registry_url": gated})
    events = [_event(f"o-{n}", n) for n in range(3)]
    await produce_framed(
        settings,
        settings.topic_order_status,
        [
            (
                e.order_id,
                confluent(registered.schema_id, avro_body(ORDER_STATUS_AVSC, e.to_record())),
                [],
            )
            for e in events
        ],
    )
    try:
        async with running(_notifier(settings)):
            await asyncio.sleep(6)  # several retries against the closed port
            assert capture.messages() == []
            assert (
                await committed(settings, settings.topic_order_status, settings.group_notifier) == 0
            )
            await gate.open()
            await eventually(lambda: len(capture.messages()) == 3, timeout=60, what="3 emails")
    finally:
        await gate.close()
    assert await topic_size(settings, settings.topic_dlq) == 0
