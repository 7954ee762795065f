"""Which framing a record carries, the JSON Schema made from the .avsc, CloudEvents' refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.support.bus import (
    ORDER_STATUS_AVSC,
    apicurio_8_byte,
    apicurio_headers,
    as_json,
    avro_body,
    cloudevent,
    confluent,
)
from tests.support.events import order_event
from worker.contracts.cloudevents_json import ORDER_STATUS_TYPE, CloudEventReader
from worker.contracts.codec import (
    ConfluentWriter,
    DecodeError,
    SchemaSet,
    SingleObjectCodec,
    load_schema,
    parse_writer_schema,
    read_with_writer,
)
from worker.contracts.events import OrderStatus, OrderStatusChanged, TimelineEvent
from worker.contracts.framing import (
    CloudEvent,
    IdKind,
    RegistryFramed,
    SingleObject,
    detect_framing,
)
from worker.contracts.json_schema import json_schema_for, render
from worker.contracts.references import dereference

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
EVENT = order_event("o-1", OrderStatus.SHIPPED)
BODY = avro_body(ORDER_STATUS_AVSC, EVENT.to_record())


def test_single_object_is_told_by_its_marker() -> None:
    framed = detect_framing(SingleObjectCodec().encode(EVENT), [])
    assert isinstance(framed, SingleObject)
    assert framed.body == BODY


@pytest.mark.parametrize("schema_id", [1, 42, 2**24 + 5, 2**31 - 1])
def test_confluent_framing_carries_a_4_byte_schema_id(schema_id: int) -> None:
    assert detect_framing(confluent(schema_id, BODY), []) == RegistryFramed(
        IdKind.SCHEMA, schema_id, BODY, "confluent"
    )


@pytest.mark.parametrize("global_id", [1, 7, 2**20, 2**32 - 1])
def test_apicurios_8_byte_id_starts_with_four_zero_bytes_and_is_a_global_id(
    global_id: int,
) -> None:
    assert detect_framing(apicurio_8_byte(global_id, BODY), []) == RegistryFramed(
        IdKind.GLOBAL, global_id, BODY, "apicurio-8-byte"
    )


def test_apicurios_header_ids_leave_the_bare_body_in_the_value() -> None:
    assert detect_framing(BODY, apicurio_headers(9)) == RegistryFramed(
        IdKind.GLOBAL, 9, BODY, "apicurio-headers"
    )
    content = [("apicurio.value.contentId", (3).to_bytes(8, "big"))]
    assert detect_framing(BODY, content) == RegistryFramed(
        IdKind.SCHEMA, 3, BODY, "apicurio-headers"
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("apicurio.value.globalId", b"\x01")], "holds 1 bytes, 8 were expected"),
        (
            [*apicurio_headers(1)[:1], ("apicurio.value.encoding", b"JSON")],
            "Apicurio JSON encoding is not read",
        ),
    ],
)
def test_broken_apicurio_headers_are_refused(headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        detect_framing(BODY, headers)


@pytest.mark.parametrize("structured", [False, True])
def test_cloudevents_are_told_by_their_headers(structured: bool) -> None:
    value, headers = cloudevent(EVENT, structured=structured)
    framed = detect_framing(value, headers)
    assert isinstance(framed, CloudEvent) and framed.structured is structured
    assert CloudEventReader().read(framed, OrderStatusChanged) == EVENT


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"", "unrecognised framing"),
        (b'{"orderId": "o-1"}', r"unrecognised framing \(starts 7b22\)"),
        (b"\x00\x01", "unrecognised framing"),
        (b"\xc3\x01\x00", "unrecognised framing"),
    ],
)
def test_anything_else_is_refused_naming_what_was_expected(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(DecodeError, match=reason):
        detect_framing(value, [])


def test_the_published_json_schema_is_the_one_order_status_avsc_makes() -> None:
    published = (SCHEMAS / "order_status.schema.json").read_text(encoding="utf-8")
    generated = render(json_schema_for(SCHEMAS / "order_status.avsc", version=1))
    assert published == generated, "run `ct schemas json-schema > schemas/order_status.schema.json`"
    Draft202012Validator.check_schema(json.loads(published))


def test_the_json_schema_keeps_avros_rules_required_optional_and_unknown_symbols() -> None:
    validator = Draft202012Validator(json.loads((SCHEMAS / "order_status.schema.json").read_text()))
    data = as_json(EVENT)
    assert not list(validator.iter_errors(data))
    assert not list(validator.iter_errors({**data, "status": "RETURNED", "channel": "web"}))
    assert not list(validator.iter_errors({**data, "occurredAt": "2026-11-02T12:00:00Z"}))
    missing = {k: v for k, v in data.items() if k != "orderId"}
    assert [e.validator for e in validator.iter_errors(missing)] == ["required"]
    assert not list(validator.iter_errors({k: v for k, v in data.items() if k != "invoiceUrl"}))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "com.example.other"}, "CloudEvents type 'com.example.other' is not"),
        ({"data": {"orderId": 5}}, r"does not match .*: \(root\): required failed"),
        ({"data": "text"}, "data is not a JSON object"),
    ],
)
def test_a_cloudevent_of_another_type_or_with_bad_data_is_refused(
    change: dict[str, object], reason: str
) -> None:
    envelope = {
        "specversion": "1.0",
        "type": ORDER_STATUS_TYPE,
        "source": "/oms",
        "id": "e-1",
        "datacontenttype": "application/json",
        "data": as_json(EVENT),
    } | change
    framed = CloudEvent(True, json.dumps(envelope).encode(), {})
    with pytest.raises(DecodeError, match=reason):
        CloudEventReader().read(framed, OrderStatusChanged)


def test_a_cloudevent_data_error_names_the_path_never_the_value() -> None:
    data = {**as_json(EVENT), "customer": {**as_json(EVENT)["customer"], "email": 12345}}
    value = json.dumps({"specversion": "1.0", "type": ORDER_STATUS_TYPE, "source": "/o",
                        "id": "1", "data": data}).encode()  # fmt: skip
    with pytest.raises(DecodeError) as caught:
        CloudEventReader().read(CloudEvent(True, value, {}), OrderStatusChanged)
    assert "customer/email: type failed" in caught.value.reason
    assert "12345" not in caught.value.reason


def test_a_newer_writer_from_a_registry_resolves_against_todays_reader() -> None:
    newer = json.loads((FIXTURES / "order_status.newer.avsc").read_text())
    writer = parse_writer_schema(json.dumps(newer), "registry schema id 2")
    body = avro_body(FIXTURES / "order_status.newer.avsc", {**EVENT.to_record(), "channel": "web"})
    reader = load_schema(ORDER_STATUS_AVSC)
    assert read_with_writer(body, writer, reader, OrderStatusChanged) == EVENT


def test_an_unresolvable_writer_is_refused_with_the_reason() -> None:
    writer = parse_writer_schema(
        (FIXTURES / "incompatible" / "order_status.avsc").read_text(), "registry schema id 3"
    )
    body = avro_body(FIXTURES / "incompatible" / "order_status.avsc",
                     {**EVENT.to_record(), "orderId": 1})  # fmt: skip
    with pytest.raises(DecodeError, match="registry schema id 3 cannot be read as order_status"):
        read_with_writer(body, writer, load_schema(ORDER_STATUS_AVSC), OrderStatusChanged)


@pytest.mark.parametrize("text", ["not json", '"string"', '{"type": "record"}'])
def test_a_registry_schema_that_is_not_an_avro_record_is_refused(text: str) -> None:
    with pytest.raises(DecodeError, match="registry schema id 4"):
        parse_writer_schema(text, "registry schema id 4")


def test_the_confluent_writer_frames_with_the_registrys_id() -> None:
    event = order_event("o-1")
    schemas = SchemaSet.from_directory()
    value = ConfluentWriter(schemas, {OrderStatusChanged: 77}).encode(event)
    assert value[:5] == b"\x00\x00\x00\x00\x4d"
    framed = detect_framing(value, [])
    assert isinstance(framed, RegistryFramed)
    reader = schemas.current["order_status.avsc"]
    assert read_with_writer(framed.body, reader, reader, OrderStatusChanged) == event
    with pytest.raises(KeyError):
        ConfluentWriter(schemas, {OrderStatusChanged: 77}).encode(
            TimelineEvent.model_validate(
                {
                    "eventId": "e",
                    "orderId": "o",
                    "storeId": "s",
                    "occurredAt": 0,
                    "kind": "UNKNOWN",
                    "causationId": "c",
                }
            )
        )


def test_schema_references_are_inlined_at_their_first_use_as_apicurios_serde_splits_them() -> None:
    """What Apicurio's Avro serde registers (nested named types as references) reads as the
    whole schema: the records it writes decode with today's reader."""
    whole = json.loads(ORDER_STATUS_AVSC.read_text())
    pieces = {}
    split = json.loads(json.dumps(whole))
    for field in split["fields"]:
        if isinstance(field["type"], dict) and field["type"]["type"] in ("enum", "record"):
            named = {"namespace": "dev.conversationtracker.oms", **field["type"]}
            pieces[f"dev.conversationtracker.oms.{field['type']['name']}"] = named
            field["type"] = field["type"]["name"]
    assert set(pieces) == {
        f"dev.conversationtracker.oms.{n}" for n in ("OrderStatus", "Customer", "Store")
    }
    inlined = dereference(split, pieces)
    writer = parse_writer_schema(json.dumps(inlined), "registry global id 16")
    assert (
        read_with_writer(BODY, writer, load_schema(ORDER_STATUS_AVSC), OrderStatusChanged) == EVENT
    )
    twice = {"type": "record", "name": "Pair", "namespace": "n",
             "fields": [{"name": "a", "type": "E"}, {"name": "b", "type": "n.E"}]}  # fmt: skip
    enum = {"type": "enum", "name": "E", "symbols": ["X"]}
    assert dereference(twice, {"n.E": enum})["fields"] == [
        {"name": "a", "type": {"type": "enum", "name": "n.E", "symbols": ["X"]}},
        {"name": "b", "type": "n.E"},
    ]
