"""Reading the project's own source for tests that hold a vocabulary to its enum (error codes, action types)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("gateway", "scheduler", "inventiv", "sql", "providers", "worker")

Trees = Iterable[tuple[str, ast.AST]]


def parsed(packages: Iterable[str] = PACKAGES) -> Iterator[tuple[str, ast.AST]]:
    """(path from the checkout, syntax tree) of every module of `packages`."""
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def members_named(trees: Trees, enum_name: str) -> set[str]:
    """The member names written as `<enum_name>.NAME` anywhere in `trees`."""
    return {
        node.attr
        for _, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == enum_name
    }

