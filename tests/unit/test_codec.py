"""Avro single-object encoding, schema resolution and the reasons a value is refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from tests.support.events import order_event, timeline_event
from worker.contracts.codec import (
    MAGIC,
    DecodeError,
    SchemaSet,
    SingleObjectCodec,
    crc64_avro,
    load_schema,
    schemas_dir,
)
from worker.contracts.events import (
    DeliveryReport,
    FailureType,
    OrderStatus,
    OrderStatusChanged,
    ReportSource,
    TimelineEvent,
    TimelineKind,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "schemas"


def _codec_with_history(*paths: Path) -> SingleObjectCodec:
    base = SchemaSet.from_directory()
    return SingleObjectCodec(SchemaSet(base.current.values(), [load_schema(p) for p in paths]))


def _write_with(path: Path, record: dict[str, object]) -> bytes:
    schema = load_schema(path)
    buffer = io.BytesIO(MAGIC + schema.fingerprint)
    buffer.seek(0, io.SEEK_END)
    schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


@pytest.mark.parametrize("status", list(OrderStatus))
def test_order_status_round_trips_for_every_status(status: OrderStatus) -> None:
    codec = SingleObjectCodec()
    event = order_event("o-1", status)
    data = codec.encode(event)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.writer_schema(OrderStatusChanged).fingerprint
    assert codec.decode(data, OrderStatusChanged) == event


def test_timeline_event_round_trips_with_and_without_message() -> None:
    codec = SingleObjectCodec()
    for event in (
        timeline_event("o-1"),
        timeline_event("o-1", kind=TimelineKind.NOTIFICATION_SENT),
    ):
        assert codec.decode(codec.encode(event), TimelineEvent) == event


def test_fingerprint_is_the_little_endian_crc64_avro_of_the_canonical_form() -> None:
    # The Avro specification's example: CRC-64-AVRO("null") = 0x63dd24e7cc258f8a, written LE.
    assert crc64_avro('"null"') == bytes.fromhex("8a8f25cce724dd63")


def test_old_writer_is_read_by_the_current_reader() -> None:
    older = FIXTURES / "order_status.older.avsc"
    record = order_event("o-1", OrderStatus.SHIPPED).to_record()
    for gone in ("items", "invoiceUrl", "trackingUrl"):
        record.pop(gone)
    decoded = _codec_with_history(older).decode(_write_with(older, record), OrderStatusChanged)
    assert decoded.status == OrderStatus.SHIPPED
    assert decoded.tracking_code == "BR123456789XX"
    assert decoded.items is None  # the reader's default for a field the writer did not have


def test_newer_writer_is_read_by_the_current_reader() -> None:
    newer = FIXTURES / "order_status.newer.avsc"
    record = order_event("o-1").to_record() | {"status": "RETURNED", "channel": "app"}
    decoded = _codec_with_history(newer).decode(_write_with(newer, record), OrderStatusChanged)
    assert decoded.status == OrderStatus.UNKNOWN  # an unknown symbol takes the enum default
    assert decoded.order_id == "o-1"


def test_current_writer_is_read_by_an_older_reader() -> None:
    """Forward compatibility: a consumer still on the older schema reads what we write today."""
    older = load_schema(FIXTURES / "order_status.older.avsc")
    data = SingleObjectCodec().encode(order_event("o-1", OrderStatus.INVOICED))
    current = SingleObjectCodec().writer_schema(OrderStatusChanged)
    record = cast(
        dict[str, Any], schemaless_reader(io.BytesIO(data[10:]), current.parsed, older.parsed)
    )
    assert record["invoiceNumber"] == "NF-000123"
    assert "items" not in record


EVOLVED = sorted((schemas_dir() / "history").glob("*.avsc")) + sorted(FIXTURES.glob("*.avsc"))


def _shaped_for(schema: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The sample record with only the fields this schema has (defaults for the ones it adds)."""
    names = {f["name"]: f for f in schema["fields"]}
    return {n: record.get(n, f.get("default")) for n, f in names.items()}


@pytest.mark.parametrize("path", EVOLVED, ids=lambda p: p.name)
def test_each_schema_change_is_backward_and_forward_compatible(path: Path) -> None:
    """Each schema of history or evolution fixture resolves against the current one both ways."""
    other = load_schema(path)
    current = {s.name: s for s in SchemaSet.from_directory().current.values()}[other.name]
    samples = {
        "OrderStatusChanged": order_event("o-1", OrderStatus.SHIPPED),
        "TimelineEvent": timeline_event("o-1", kind=TimelineKind.MESSAGE_FORWARDED),
    }
    sample = samples[other.name.rpartition(".")[2]].to_record()
    for writer, reader in ((other, current), (current, other)):
        buffer = io.BytesIO()
        schemaless_writer(buffer, writer.parsed, _shaped_for(writer.parsed, sample))
        buffer.seek(0)
        decoded = cast(dict[str, Any], schemaless_reader(buffer, writer.parsed, reader.parsed))
        assert decoded["orderId"] == "o-1"
        assert set(decoded) == {f["name"] for f in reader.parsed["fields"]}


def test_a_bounce_entry_is_read_by_a_consumer_on_the_previous_timeline_schema() -> None:
    """A complaint (a kind added later) reads as UNKNOWN there; the delivery report is skipped."""
    previous = load_schema(schemas_dir() / "history" / "timeline_event.1.avsc")
    event = timeline_event("o-1", kind=TimelineKind.COMPLAINT_RECEIVED).model_copy(
        update={
            "delivery": DeliveryReport(
                failure_type=FailureType.COMPLAINT, source=ReportSource.ARF, feedback_type="abuse"
            )
        }
    )
    codec = SingleObjectCodec()
    data = codec.encode(event)
    assert codec.decode(data, TimelineEvent) == event
    current = codec.writer_schema(TimelineEvent)
    record = cast(
        dict[str, Any], schemaless_reader(io.BytesIO(data[10:]), current.parsed, previous.parsed)
    )
    assert record["kind"] == "UNKNOWN" and "delivery" not in record
    assert record["message"]["subject"] == "Your order"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not avro at all", "missing C3 01 marker"),
        (b"\xc3\x01\x00\x01\x02\x03\x04\x05\x06\x07body", "unknown writer schema fingerprint"),
        (b"\xc3\x01", "missing C3 01 marker"),
    ],
)
def test_unreadable_values_raise_decode_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        SingleObjectCodec().decode(data, OrderStatusChanged)


def test_truncated_body_is_a_decode_error() -> None:
    data = SingleObjectCodec().encode(order_event("o-1"))
    with pytest.raises(DecodeError, match="body does not match its schema"):
        SingleObjectCodec().decode(data[:40], OrderStatusChanged)


def test_trailing_garbage_is_a_decode_error() -> None:
    data = SingleObjectCodec().encode(order_event("o-1")) + b"\x00\x01"
    with pytest.raises(DecodeError, match="trailing bytes"):
        SingleObjectCodec().decode(data, OrderStatusChanged)


def test_invalid_record_reason_names_the_field_but_never_the_data() -> None:
    schema = SingleObjectCodec().writer_schema(OrderStatusChanged)
    record = order_event("o-1").to_record()
    record["customer"]["email"] = ""
    record["currency"] = "reais"
    buffer = io.BytesIO(MAGIC + schema.fingerprint)
    buffer.seek(0, io.SEEK_END)
    schemaless_writer(buffer, parse_schema(schema.parsed), record)
    with pytest.raises(DecodeError) as caught:
        SingleObjectCodec().decode(buffer.getvalue(), OrderStatusChanged)
    assert "customer.email" in caught.value.reason
    assert "reais" not in caught.value.reason


def test_a_timeline_value_is_refused_where_an_order_event_is_expected() -> None:
    data = SingleObjectCodec().encode(timeline_event("o-1"))
    with pytest.raises(
        DecodeError, match=r"where dev\.conversationtracker\.oms\.OrderStatusChanged"
    ):
        SingleObjectCodec().decode(data, OrderStatusChanged)
