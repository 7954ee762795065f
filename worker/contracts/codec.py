"""Avro values on the wire, decoded into the event models at the edge.

The default wire format is Avro single-object encoding (`C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the binary body), so a consumer can tell which
schema wrote a message without a registry. `ConfluentWriter` writes the schema registry's framing
instead (byte 0, the registry's 4-byte schema id, the body). Reading recognises every framing a
bus carries (worker/contracts/framing.py); `read_with_writer` resolves any writer schema, from
this repository or from a registry, against the reader's current one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    to_parsing_canonical_form,
)
from pydantic import ValidationError

from worker.contracts.events import Contract, OrderStatusChanged, TimelineEvent

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
CONFLUENT_MAGIC = b"\x00"
ModelT = TypeVar("ModelT", bound=Contract)
# A Kafka record's headers as aiokafka hands them over.
Headers = Sequence[tuple[str, bytes]]

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
    return _known(json.loads(path.read_text(encoding="utf-8")), path)


def parse_writer_schema(text: str, origin: str) -> KnownSchema:
    """A writer schema as a registry holds it (JSON text); DecodeError if it is not Avro."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise DecodeError(f"{origin} is not an Avro record schema")
        return _known(raw, Path(origin))
    except (ValueError, SchemaParseException, UnknownType) as exc:
        raise DecodeError(f"{origin} is not a valid Avro schema: {type(exc).__name__}") from None


def _known(raw: dict[str, Any], path: Path) -> KnownSchema:
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
    """What the services use: encode what they publish, read what they consume."""

    async def start(self) -> None:
        """Whatever must happen before the first encode (a registry's schema id)."""

    def encode(self, model: Contract) -> bytes: ...

    async def read(self, value: bytes | None, headers: Headers, model_type: type[ModelT]) -> ModelT:
        """The record as a model, or DecodeError (dead letter); transient failures wait."""
        ...


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

    def writer_by_fingerprint(self, fingerprint: bytes) -> KnownSchema:
        writer = self._schemas.by_fingerprint.get(fingerprint)
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {fingerprint.hex()}")
        return writer

    async def start(self) -> None:
        """Nothing to prepare: the schemas are this repository's."""

    async def read(self, value: bytes | None, headers: Headers, model_type: type[ModelT]) -> ModelT:
        """Single-object encoding only; worker/adapters/event_wire.py reads every framing."""
        return self.decode(value, model_type)

    def decode(self, data: bytes | None, model_type: type[ModelT]) -> ModelT:
        if data is None:
            raise DecodeError("empty value (tombstone)")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 marker)")
        writer = self.writer_by_fingerprint(bytes(data[2:HEADER_SIZE]))
        reader = self.writer_schema(model_type)
        return read_with_writer(data[HEADER_SIZE:], writer, reader, model_type)


class ConfluentWriter:
    """Writes the schema registry's framing: byte 0, the 4-byte big-endian schema id, the body.

    The ids are the registry's for this repository's current schemas (registered or looked up at
    start-up, worker/adapters/event_wire.py); a contract without one cannot be written.
    """

    def __init__(self, schemas: SchemaSet, ids: dict[type[Contract], int]) -> None:
        self._schemas = schemas
        self._ids = ids

    def encode(self, model: Contract) -> bytes:
        model_type = type(model)
        schema = self._schemas.current[SCHEMA_FILES[model_type]]
        buffer = io.BytesIO()
        buffer.write(CONFLUENT_MAGIC)
        buffer.write(self._ids[model_type].to_bytes(4, "big"))
        schemaless_writer(buffer, schema.parsed, model.to_record())
        return buffer.getvalue()


def read_with_writer(
    body: bytes, writer: KnownSchema, reader: KnownSchema, model_type: type[ModelT]
) -> ModelT:
    """Avro schema resolution of `writer` against `reader`, then the model; else DecodeError.

    A writer that cannot be resolved (a field without default missing, a type changed) is a
    dead letter: retrying the same bytes with the same schemas cannot succeed.
    """
    if writer.name != reader.name:
        raise DecodeError(f"record {writer.name} where {reader.name} was expected")
    stream = io.BytesIO(body)
    try:
        record = schemaless_reader(stream, writer.parsed, reader.parsed)
    except SchemaResolutionError as exc:
        raise DecodeError(
            f"writer schema {writer.path} cannot be read as {reader.path.name}: {str(exc)[:160]}"
        ) from None
    except (EOFError, StopIteration, IndexError, ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"body does not match its schema: {type(exc).__name__}") from None
    if stream.tell() != len(body):
        raise DecodeError(f"{len(body) - stream.tell()} trailing bytes after record")
    return validated(record, model_type)


def validated(record: object, model_type: type[ModelT]) -> ModelT:
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
