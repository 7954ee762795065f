"""`ct schemas register|check|json-schema`: this repository's contracts and a schema registry.

Subjects follow Confluent's TopicNameStrategy, `<topic>-value`: order_status.avsc under
CT_TOPIC_ORDER_STATUS's, timeline_event.avsc under CT_TOPIC_TIMELINE's (`ct.timeline.v1-value`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.cli._common import out
from worker.core.config import Settings, Unreachable

if TYPE_CHECKING:
    from worker.adapters.schema_registry import SchemaRegistry
    from worker.contracts.codec import KnownSchema


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="the Avro contracts and a schema registry")
    schemas_sub = schemas.add_subparsers(dest="action", required=True)
    reg = schemas_sub.add_parser(
        "register", help="register both contracts and set their subjects to BACKWARD"
    )
    reg.set_defaults(handler=cmd_register)
    check = schemas_sub.add_parser(
        "check", help="are the repository's schemas compatible with what the registry holds?"
    )
    check.add_argument(
        "--schemas", type=Path, help="a directory of .avsc files to check (default: schemas/)"
    )
    check.set_defaults(handler=cmd_check)
    json_schema = schemas_sub.add_parser(
        "json-schema", help="print the JSON Schema of CloudEvents data (from order_status.avsc)"
    )
    json_schema.add_argument(
        "--check", action="store_true", help="fail unless schemas/ publishes exactly this"
    )
    json_schema.set_defaults(handler=cmd_json_schema)


def _subjects(settings: Settings, root: Path | None) -> list[tuple[str, KnownSchema]]:
    from worker.adapters.event_wire import value_subject
    from worker.contracts.codec import SCHEMA_FILES, SchemaSet
    from worker.contracts.events import OrderStatusChanged, TimelineEvent

    current = SchemaSet.from_directory(root).current
    topics = {
        OrderStatusChanged: settings.topic_order_status,
        TimelineEvent: settings.topic_timeline,
    }
    return [
        (value_subject(topics[model]), current[SCHEMA_FILES[model]])
        for model in (OrderStatusChanged, TimelineEvent)
        if SCHEMA_FILES[model] in current
    ]


async def _with_registry(settings: Settings) -> SchemaRegistry:
    from worker.adapters.schema_registry import SchemaRegistry

    return SchemaRegistry(settings)


async def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.event_wire import schema_text
    from worker.adapters.schema_registry import BACKWARD, RegistryUnavailable

    registry = await _with_registry(settings)
    try:
        for subject, schema in _subjects(settings, None):
            schema_id = await registry.register(subject, schema_text(schema))
            await registry.set_compatibility(subject, BACKWARD)
            out(f"{subject}: {schema.path.name} is schema id {schema_id}, compatibility {BACKWARD}")
    except RegistryUnavailable as exc:
        raise _unreachable(settings, exc) from None
    finally:
        await registry.aclose()
    return 0


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from worker.adapters.event_wire import schema_text
    from worker.adapters.schema_registry import RegistryUnavailable

    registry = await _with_registry(settings)
    failed = 0
    try:
        for subject, schema in _subjects(settings, args.schemas):
            verdict = await registry.check(subject, schema_text(schema))
            level = await registry.compatibility_level(subject)
            if verdict is None:
                out(f"{subject}: not registered yet (`ct schemas register` registers it)")
            elif verdict.compatible:
                out(f"{subject}: {schema.path.name} is compatible ({level or 'default level'})")
            else:
                failed += 1
                reasons = "; ".join(verdict.reasons) or "the registry gave no reason"
                out(f"{subject}: {schema.path.name} is NOT compatible ({level}): {reasons}")
    except RegistryUnavailable as exc:
        raise _unreachable(settings, exc) from None
    finally:
        await registry.aclose()
    return 1 if failed else 0


async def cmd_json_schema(args: argparse.Namespace, settings: Settings) -> int:
    from worker.contracts.codec import schemas_dir
    from worker.contracts.json_schema import json_schema_for, render

    text = render(json_schema_for(schemas_dir() / "order_status.avsc", version=1))
    if not args.check:
        sys.stdout.write(text)
        return 0
    published = schemas_dir() / "order_status.schema.json"
    if published.read_text(encoding="utf-8") != text:
        out(f"{published} is not what order_status.avsc makes: run `ct schemas json-schema > it`")
        return 1
    out(f"{published.name} matches order_status.avsc")
    return 0


def _unreachable(settings: Settings, exc: Exception) -> Unreachable:
    return Unreachable(
        f"no schema registry answers at CT_SCHEMA_REGISTRY_URL={settings.schema_registry_url} "
        f"({exc})"
    )
