"""Which framing carries a record, told by its first bytes and its headers, no setting needed.

What an OMS's bus may carry, and how each is recognised, in the order checked:

- CloudEvents, structured mode: header `content-type: application/cloudevents+json`; the value
  is the whole event as JSON.
- CloudEvents, binary mode: a `ce_specversion` header (with `ce_type`, `ce_id`, ...); the value
  is the event's `data` as JSON.
- Apicurio's header-carried ids: `apicurio.value.globalId` or `apicurio.value.contentId`, each an
  8-byte big-endian number; the value is the bare Avro body (Apicurio serdes with headers on).
- Avro single-object encoding: `C3 01`, the writer schema's 8-byte CRC-64-AVRO fingerprint,
  the body (what this project writes by default).
- A registry id in the value: byte `00`, then the id, then the body. Confluent's wire format
  has a 4-byte id; Apicurio's serdes by default an 8-byte global id. Both ids count from 1, and
  8-byte ids stay far below 2**32, so an 8-byte id starts with four zero bytes, which a 4-byte
  id never is (id 0 does not exist): `00 00 00 00 00` reads as the 8-byte form. An 8-byte id of
  2**32 or more would be misread; no registry hands out that many.

Anything else is refused with a reason that names what was expected (a dead letter).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from worker.contracts.codec import HEADER_SIZE, MAGIC, DecodeError, Headers

CLOUDEVENTS_JSON = "application/cloudevents+json"
APICURIO_GLOBAL_ID = "apicurio.value.globalId"
APICURIO_CONTENT_ID = "apicurio.value.contentId"
APICURIO_ENCODING = "apicurio.value.encoding"
CONFLUENT_PREFIX = 1 + 4
APICURIO_PREFIX = 1 + 8


class IdKind(StrEnum):
    """What a registry id names: ccompat's schema ids are content ids (Apicurio and Confluent)."""

    SCHEMA = "schema id"  # Confluent's 4-byte id = Apicurio's content id
    GLOBAL = "global id"  # Apicurio's id of one artifact version


@dataclass(frozen=True)
class SingleObject:
    fingerprint: bytes
    body: bytes


@dataclass(frozen=True)
class RegistryFramed:
    kind: IdKind
    schema_id: int
    body: bytes
    framing: str  # for logs and dead-letter reasons: "confluent", "apicurio-8-byte", ...


@dataclass(frozen=True)
class CloudEvent:
    structured: bool
    value: bytes
    headers: dict[str, bytes]


Framing = SingleObject | RegistryFramed | CloudEvent


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """Headers by lower-case name; a repeated header keeps its last value, as Kafka clients do."""
    return {name.lower(): value or b"" for name, value in headers or ()}


def detect_framing(value: bytes | None, headers: Headers | None) -> Framing:
    if value is None:
        raise DecodeError("empty value (tombstone)")
    by_name = header_map(headers)
    content_type = by_name.get("content-type", b"").decode("latin-1").split(";")[0].strip()
    if content_type.lower() == CLOUDEVENTS_JSON:
        return CloudEvent(structured=True, value=value, headers=by_name)
    if "ce_specversion" in by_name:
        return CloudEvent(structured=False, value=value, headers=by_name)
    for name, kind in ((APICURIO_GLOBAL_ID, IdKind.GLOBAL), (APICURIO_CONTENT_ID, IdKind.SCHEMA)):
        if name.lower() in by_name:
            encoding = by_name.get(APICURIO_ENCODING.lower(), b"BINARY").decode("latin-1")
            if encoding.upper() != "BINARY":
                raise DecodeError(f"Apicurio {encoding} encoding is not read; use BINARY")
            return RegistryFramed(kind, _id(by_name[name.lower()], name), value, "apicurio-headers")
    if value[:2] == MAGIC and len(value) >= HEADER_SIZE:
        return SingleObject(bytes(value[2:HEADER_SIZE]), bytes(value[HEADER_SIZE:]))
    if value[:1] == b"\x00":
        if value[1:5] == b"\x00\x00\x00\x00" and len(value) >= APICURIO_PREFIX:
            global_id = int.from_bytes(value[1:APICURIO_PREFIX], "big")
            return RegistryFramed(
                IdKind.GLOBAL, global_id, bytes(value[APICURIO_PREFIX:]), "apicurio-8-byte"
            )
        if len(value) >= CONFLUENT_PREFIX:
            schema_id = int.from_bytes(value[1:CONFLUENT_PREFIX], "big")
            return RegistryFramed(
                IdKind.SCHEMA, schema_id, bytes(value[CONFLUENT_PREFIX:]), "confluent"
            )
    first = value[:2].hex() or "nothing"
    raise DecodeError(
        f"unrecognised framing (starts {first}): expected Avro single-object (c301), "
        "a registry id (00), or CloudEvents headers"
    )


def _id(raw: bytes, header: str) -> int:
    if len(raw) != 8:
        raise DecodeError(f"header {header} holds {len(raw)} bytes, 8 were expected")
    return int.from_bytes(raw, "big")
