"""The JSON Schema of a contract, generated from its Avro schema: one contract, two encodings.

A CloudEvent's `data` is the order-status record as plain JSON (camelCase names as in the Avro
schema, no union wrappers) and is validated against `schemas/order_status.schema.json`, which
this module writes (`ct schemas json-schema`; a unit test keeps the published file in step).

The mapping keeps Avro's evolution rules, so a JSON producer may evolve as an Avro one may:
- a field with a default is optional, one without is required; unknown fields are allowed
  (a newer producer's additions), as Avro's resolution skips them;
- an enum with a default accepts any string (a newer symbol reads as the default, as Avro's
  resolution does); one without lists its symbols;
- `timestamp-millis` is either epoch milliseconds or an RFC 3339 date-time string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
PRIMITIVES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "int": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "long": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "null": {"type": "null"},
}
TIMESTAMP_MILLIS: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "description": "milliseconds since the epoch, UTC"},
        {"type": "string", "format": "date-time", "description": "RFC 3339"},
    ]
}


def json_schema_for(avro_path: Path, version: int) -> dict[str, Any]:
    raw = json.loads(avro_path.read_text(encoding="utf-8"))
    full_name = f"{raw['namespace']}.{raw['name']}" if "namespace" in raw else str(raw["name"])
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:{full_name}:v{version}",
        "title": full_name,
        **_convert(raw, {}, raw.get("namespace", "")),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _convert(avro: Any, named: dict[str, dict[str, Any]], namespace: str) -> dict[str, Any]:
    if isinstance(avro, str):
        if avro in PRIMITIVES:
            return dict(PRIMITIVES[avro])
        # A reference to a named type defined earlier: inlined again (no schema here recurses).
        full_name = avro if "." in avro or not namespace else f"{namespace}.{avro}"
        return dict(named[full_name])
    if isinstance(avro, list):
        return {"anyOf": [_convert(branch, named, namespace) for branch in avro]}
    kind = avro["type"]
    if avro.get("logicalType") == "timestamp-millis" and kind == "long":
        return dict(TIMESTAMP_MILLIS)
    space = avro.get("namespace", namespace)
    if kind == "record":
        converted = _record(avro, named, space)
    elif kind == "enum":
        converted = _enum(avro)
    elif kind == "array":
        converted = {"type": "array", "items": _convert(avro["items"], named, space)}
    elif kind == "map":
        values = _convert(avro["values"], named, space)
        converted = {"type": "object", "additionalProperties": values}
    else:
        converted = _convert(kind, named, space)
    if "name" in avro:
        named[f"{space}.{avro['name']}" if space else avro["name"]] = converted
    return converted


def _record(
    avro: dict[str, Any], named: dict[str, dict[str, Any]], namespace: str
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in avro["fields"]:
        converted = _convert(field["type"], named, namespace)
        if "doc" in field:
            converted = {**converted, "description": field["doc"]}
        properties[field["name"]] = converted
        if "default" not in field:
            required.append(field["name"])
    record: dict[str, Any] = {"type": "object"}
    if "doc" in avro:
        record["description"] = avro["doc"]
    record |= {"properties": properties, "required": required, "additionalProperties": True}
    return record


def _enum(avro: dict[str, Any]) -> dict[str, Any]:
    symbols = list(avro["symbols"])
    if "default" in avro:
        return {
            "type": "string",
            "examples": symbols,
            "description": f"one of the examples; another value reads as {avro['default']}",
        }
    return {"type": "string", "enum": symbols}
