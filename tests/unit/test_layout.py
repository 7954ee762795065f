"""The tree README shows is the code's, and the `ct` parser tree is a complete dispatch table."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from worker.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "devtools", "apps", "web", "services", "adapters", "domain", "contracts", "core")


def _readme_tree() -> dict[str, str]:
    """Each package's description in README's tree, its wrapped lines joined."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("```\nworker/") : text.index("```", text.index("```\nworker/") + 3)]
    described: dict[str, str] = {}
    current = None
    for line in block.splitlines()[1:]:
        head = re.match(r"^  (\w+)/\s", line)
        if head:
            current = head.group(1)
            described[current] = line[len(head.group(0)) :]
        elif line.startswith("    ") and current:
            described[current] += " " + line.strip()
        else:
            current = None
    return described


def test_readme_tree_lists_every_package_of_worker() -> None:
    described = _readme_tree()
    on_disk = {p.parent.name for p in (REPO / "worker").glob("*/__init__.py")}
    assert on_disk == set(PACKAGES)
    assert set(PACKAGES) <= set(described), "README's tree misses a package of worker/"


@pytest.mark.parametrize("package", PACKAGES)
def test_readme_tree_names_every_module_of_the_package(package: str) -> None:
    words = set(re.findall(r"[a-z_]+", _readme_tree()[package]))
    modules = {p.stem for p in (REPO / "worker" / package).glob("*.py") if p.stem != "__init__"}
    missing = sorted(modules - words)
    assert not missing, f"README's tree of worker/{package}/ does not name {missing}"


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _leaves(child, (*path, name))
            return found
    return [path] if path else []


def test_every_ct_command_has_its_handler() -> None:
    parser = build_parser()
    leaves = _leaves(parser)
    assert len(leaves) > 20
    for leaf in leaves:
        handler = _defaults(parser, leaf).get("handler")
        assert callable(handler), f"`ct {' '.join(leaf)}` has no handler"


def _defaults(parser: argparse.ArgumentParser, leaf: tuple[str, ...]) -> dict[str, object]:
    node = parser
    for name in leaf:
        sub = next(a for a in node._actions if isinstance(a, argparse._SubParsersAction))
        node = sub.choices[name]
    return dict(node._defaults)
