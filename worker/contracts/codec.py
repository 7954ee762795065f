"""Avro values on the wire, decoded into the event models at the edge.

The default wire format is Avro single-object encoding (`C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the binary body), so a consumer can tell which
schema wrote a message without a registry. Workers only see the `ValueCodec` protocol: a Confluent
Schema Registry codec (magic byte 0, 4-byte schema id) can be added beside `SingleObjectCodec`
without touching them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import ValidationError

from worker.contracts.events import Contract, OrderStatusChanged, TimelineEvent

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
ModelT = TypeVar("ModelT", bound=Contract)

# Which current schema file each contract is written with.
SCHEMA_FILES: dict[type[Contract], str] = {
    OrderStatusChanged: "order_status.avsc",
    TimelineEvent: "timeline_event.avsc",
}


class DecodeError(Exception):
    """A value that cannot become a model. `reason` is safe for a DLQ header: it holds no data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KnownSchema:
    name: str  # full name, e.g. dev.conversationtracker.oms.OrderStatusChanged
    path: Path
    parsed: Any
    fingerprint: bytes  # little-endian CRC-64-AVRO, as single-object encoding writes it


def schemas_dir() -> Path:
    """`schemas/` of a checkout, or the copy packed into the wheel as worker/_schemas."""
    package = Path(__file__).resolve().parent.parent  # worker/
    packaged = package / "_schemas"
    return packaged if packaged.is_dir() else package.parent / "schemas"


def crc64_avro(canonical_form: str) -> bytes:
    """The schema fingerprint in the byte order single-object encoding writes (little-endian)."""
    return bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))


def load_schema(path: Path) -> KnownSchema:
    raw = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_schema(raw, _write_hint=False)
    return KnownSchema(
        name=str(raw["namespace"] + "." + raw["name"]) if "namespace" in raw else str(raw["name"]),
        path=path,
        parsed=parsed,
        fingerprint=crc64_avro(to_parsing_canonical_form(parsed)),
    )


class SchemaSet:
    """The current schema per record name, and every known writer schema by fingerprint."""

    def __init__(self, current: Iterable[KnownSchema], history: Iterable[KnownSchema] = ()) -> None:
        self.current = {s.path.name: s for s in current}
        self.by_fingerprint = {s.fingerprint: s for s in [*history, *self.current.values()]}

    @classmethod
    def from_directory(cls, root: Path | None = None) -> SchemaSet:
        root = root or schemas_dir()
        current = [load_schema(p) for p in sorted(root.glob("*.avsc"))]
        history = [load_schema(p) for p in sorted((root / "history").glob("*.avsc"))]
        return cls(current, history)


class ValueCodec(Protocol):
    def encode(self, model: Contract) -> bytes: ...

    def decode(self, data: bytes, model_type: type[ModelT]) -> ModelT: ...


class SingleObjectCodec:
    """Avro single-object encoding with schema resolution against the reader's current schema."""

    def __init__(self, schemas: SchemaSet | None = None) -> None:
        self._schemas = schemas or SchemaSet.from_directory()

    def writer_schema(self, model_type: type[Contract]) -> KnownSchema:
        return self._schemas.current[SCHEMA_FILES[model_type]]

    def encode(self, model: Contract) -> bytes:
        schema = self.writer_schema(type(model))
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(schema.fingerprint)
        schemaless_writer(buffer, schema.parsed, model.to_record())
        return buffer.getvalue()

    def decode(self, data: bytes, model_type: type[ModelT]) -> ModelT:
        if data is None:
            raise DecodeError("empty value (tombstone)")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 marker)")
        writer = self._schemas.by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {data[2:HEADER_SIZE].hex()}")
        reader = self.writer_schema(model_type)
        if writer.name != reader.name:
            raise DecodeError(f"record {writer.name} where {reader.name} was expected")
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = schemaless_reader(body, writer.parsed, reader.parsed)
        except (EOFError, StopIteration, IndexError, ValueError, TypeError, KeyError) as exc:
            raise DecodeError(f"body does not match its schema: {type(exc).__name__}") from None
        if body.tell() != len(data) - HEADER_SIZE:
            raise DecodeError(
                f"{len(data) - HEADER_SIZE - body.tell()} trailing bytes after record"
            )
        try:
            return model_type.model_validate(record)
        except ValidationError as exc:
            raise DecodeError(f"invalid record: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Field paths and messages only: a DLQ header must never carry the data (an address)."""
    parts = [
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)[:5]
    ]
    return "; ".join(parts)
