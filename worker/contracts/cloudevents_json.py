"""CloudEvents on Kafka (binary and structured mode) carrying an order-status record as JSON.

The Kafka protocol binding is the `cloudevents` SDK's. What this adds is the contract: `type`
names the contract and its version (`ORDER_STATUS_TYPE`), `data` is validated against
`schemas/order_status.schema.json` (generated from `order_status.avsc`, worker/contracts/
json_schema.py), then read into the same model an Avro record becomes. Every refusal is a dead
letter: the same bytes can never become valid.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from jsonschema import Draft202012Validator

from worker.contracts.codec import DecodeError, ModelT, schemas_dir, validated
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.contracts.framing import CloudEvent

ORDER_STATUS_TYPE = "dev.conversationtracker.oms.OrderStatusChanged.v1"
# The CloudEvents `type` of each contract a CloudEvent may carry, and its JSON Schema file.
CONTRACT_TYPES: dict[type[Any], tuple[str, str]] = {
    OrderStatusChanged: (ORDER_STATUS_TYPE, "order_status.schema.json"),
}
MAX_REASONS = 3


class CloudEventReader:
    """Reads a CloudEvent into its contract's model, or raises DecodeError with the reason."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root or schemas_dir()

    @cached_property
    def _validators(self) -> dict[str, Draft202012Validator]:
        validators = {}
        for event_type, file in CONTRACT_TYPES.values():
            schema = json.loads((self._root / file).read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
            validators[event_type] = Draft202012Validator(schema)
        return validators

    def read(self, framed: CloudEvent, model_type: type[ModelT]) -> ModelT:
        if model_type not in CONTRACT_TYPES:
            raise DecodeError(f"a CloudEvent cannot carry a {model_type.__name__}")
        expected, _ = CONTRACT_TYPES[model_type]
        event = _parse(framed)
        if event.get_type() != expected:
            raise DecodeError(f"CloudEvents type {event.get_type()[:100]!r} is not {expected!r}")
        data = event.get_data()
        if not isinstance(data, dict):
            raise DecodeError("CloudEvents data is not a JSON object")
        errors = sorted(self._validators[expected].iter_errors(data), key=lambda e: e.path)
        if errors:
            # Paths and the failed keyword only: the message of a JSON Schema error quotes data.
            reasons = [
                f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.validator} failed"
                for e in errors[:MAX_REASONS]
            ]
            raise DecodeError(f"CloudEvents data does not match {expected}: {'; '.join(reasons)}")
        return validated(_as_record(data), model_type)


def _parse(framed: CloudEvent) -> BaseCloudEvent:
    message = KafkaMessage(headers=framed.headers, key=None, value=framed.value)
    try:
        if framed.structured:
            return from_structured(message, JSONFormat())
        return from_binary(message, JSONFormat())
    except BaseCloudEventException as exc:
        raise DecodeError(f"not a valid CloudEvent: {type(exc).__name__}") from None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        mode = "structured" if framed.structured else "binary"
        raise DecodeError(f"not a valid {mode}-mode CloudEvent: {type(exc).__name__}") from None


def _as_record(data: dict[str, Any]) -> dict[str, Any]:
    """What Avro's resolution would have made of it: epoch millis as a date, unknown symbols as
    UNKNOWN. The schema has checked the shapes."""
    record = dict(data)
    occurred = record.get("occurredAt")
    if isinstance(occurred, int):
        record["occurredAt"] = datetime.fromtimestamp(occurred / 1000, UTC)
    if record.get("status") not in OrderStatus.__members__:
        record["status"] = OrderStatus.UNKNOWN.value
    return record
