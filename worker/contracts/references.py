"""Schema references inlined: one self-contained writer schema out of a registry's pieces.

Apicurio's Avro serde registers each nested named type (an enum, a record) as an artifact of
its own and the outer schema as a reference to them (Confluent's schema references are the
same idea). A writer schema is only readable whole, so each reference is inlined where its
name first appears, as Avro's own JSON form would have it; later uses stay names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

NAMED = ("record", "error", "enum", "fixed")


def dereference(schema: Any, named: Mapping[str, Any]) -> Any:
    """`schema` with every name in `named` (full name -> its schema, itself self-contained)
    replaced by its definition at its first use."""
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            return _inline(node, namespace)
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        kind = node.get("type")
        inner = namespace
        if kind in NAMED and isinstance(node.get("name"), str):
            full = _full_name(node["name"], node.get("namespace", namespace))
            defined.add(full)
            inner = full.rpartition(".")[0]
        if kind in ("record", "error"):
            node["fields"] = [{**f, "type": walk(f["type"], inner)} for f in node.get("fields", [])]
        elif kind == "array":
            node["items"] = walk(node["items"], inner)
        elif kind == "map":
            node["values"] = walk(node["values"], inner)
        elif isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in NAMED):
            node["type"] = walk(kind, inner)
        return node

    def _inline(name: str, namespace: str) -> Any:
        for candidate in (_full_name(name, namespace), name):
            if candidate in named and candidate not in defined:
                definition = copy.deepcopy(named[candidate])
                if isinstance(definition, dict) and "namespace" not in definition:
                    definition["name"] = candidate  # keep its full name wherever it lands
                return walk(definition, namespace)
        return name

    return walk(schema, "")


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"
