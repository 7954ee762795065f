"""Interop on the JVM: an OMS producer with Apicurio Registry's own Avro serde, in its three
framings, feeds the notifier; a Java consumer with the same serde reads our timeline back
through the registry (tests/interop/jvm, built with Maven the first time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Capture
from tests.helpers import running
from tests.support import jvm
from tests.support.bus import ORDER_STATUS_AVSC
from tests.support.events import order_event
from tests.support.kafka import topic_size
from tests.support.polling import eventually
from worker.adapters import mongo
from worker.adapters.event_wire import EventWire
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.contracts.events import OrderStatus
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.services.outbound import MailKeys
from worker.services.timeline import get_timeline

pytestmark = [pytest.mark.stack, pytest.mark.slow]
MODES = ("confluent", "apicurio-headers", "apicurio-8-byte")


@pytest.fixture(scope="module")
def interop() -> Path:
    try:
        return jvm.build()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


async def test_a_jvm_producer_with_apicurios_serde_feeds_the_notifier_and_reads_the_timeline(
    *,
    topics: Settings,
    with_capture: Settings,
    capture: Capture,
    registry_url: str,
    db: mongo.Database,
    interop: Path,
    tmp_path: Path,
) -> None:
    """One event per serde framing becomes one email and its timeline entries; with
    CT_SCHEMA_FRAMING=confluent, the Java deserializer reads every timeline record back."""
    settings = with_capture.model_copy(
        update={"schema_registry_url": registry_url, "schema_framing": "confluent"}
    )
    native = registry_url.rpartition("/apis/ccompat/")[0] + "/apis/registry/v2"
    events = {
        mode: order_event(f"o-{mode}", OrderStatus.SHIPPED, customer_email=f"c.{n}@example.org")
        for n, mode in enumerate(MODES)
    }
    for mode, event in events.items():
        records = tmp_path / f"{mode}.json"
        records.write_text(jvm.avro_json_lines(ORDER_STATUS_AVSC, [event]))
        produced = jvm.run(interop, "produce", settings.kafka_bootstrap,
                           settings.topic_order_status, native, mode, str(ORDER_STATUS_AVSC),
                           str(records))  # fmt: skip
        assert produced.returncode == 0, produced.stderr[-3000:]
        print(produced.stdout.strip())  # the run, in the log of `pytest -s` or of a failure
    notifier = NotifierService(
        settings, EventWire(settings), AddressCipher(settings.data_keys()), MailKeys.load(settings)
    )
    async with running(notifier, ProjectorService(settings, EventWire(settings))):
        await eventually(lambda: len(capture.messages()) == len(MODES), timeout=60, what="emails")
        orders = [e.order_id for e in events.values()]
        await eventually(lambda: _have_entries(db, orders), what="timeline entries")
    assert await topic_size(settings, settings.topic_dlq) == 0
    written = await topic_size(settings, settings.topic_timeline)
    consumed = jvm.run(interop, "consume", settings.kafka_bootstrap, settings.topic_timeline,
                       native, str(written), "60")  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr[-3000:]
    print(consumed.stdout.strip())
    entries = [json.loads(line) for line in consumed.stdout.splitlines() if line.startswith("{")]
    assert len(entries) == written
    assert {e["orderId"] for e in entries} == {e.order_id for e in events.values()}
    assert {e["kind"] for e in entries} == {"STATUS_CHANGED", "NOTIFICATION_SENT"}


async def _have_entries(db: mongo.Database, orders: list[str]) -> bool:
    return all([len(await get_timeline(db, order) or []) >= 2 for order in orders])
