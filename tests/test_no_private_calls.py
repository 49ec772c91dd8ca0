"""Tests use what the project's modules make public: no `from gateway.x import _y`, no `module._y`.

A private name is free to change; a test holding on to one breaks on a refactor that changed nothing a
caller can see. Test through the public function that uses it, or, when the private function is a pure
decision worth testing on its own, make it public. Names of tests/support helpers and attributes of
objects (a fake's `self._x`) are not looked at: only names reached through a project module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# The importable packages of the repository (each folder at its root with an __init__.py).
PROJECT = frozenset(p.parent.name for p in ROOT.glob("*/__init__.py"))


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, "module.name") for each private name of a project module that `source` imports or reaches."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> the project module (or object) it stands for
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_project(node.module):
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"{node.module}.{alias.name}"))
                else:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project(alias.name):
                    local = alias.asname or alias.name.split(".")[0]
                    modules[local] = alias.name if alias.asname else local
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            path = _dotted(node.value)
            if path and path.split(".")[0] in modules:
                head, _, rest = path.partition(".")
                found.append((node.lineno, ".".join(filter(None, (modules[head], rest, node.attr)))))
    return sorted(found)


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attribute reads on a name; None for anything else (a call, a subscript)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from gateway.relay import _Relay, Outcome", [(1, "gateway.relay._Relay")]),
        ("from gateway import relay\nrelay._take_usage(x)", [(2, "gateway.relay._take_usage")]),
        ("import gateway.relay\ngateway.relay._finish()", [(2, "gateway.relay._finish")]),
        ("import inventiv.cli as c\nc._create_key()", [(2, "inventiv.cli._create_key")]),
        ("from inventiv import cli as c\nx = c._run", [(2, "inventiv.cli._run")]),
        # Not a project module's name: a support helper, a fake's own state, an object's attribute, a dunder.
        ("from fleet import _helper\n_helper()", []),
        ("class F:\n    def f(self):\n        return self._x", []),
        ("from gateway import relay\nrelay.Outcome()._x", []),
        ("import gateway\ngateway.__file__", []),
        ("import aiohttp\naiohttp._x", []),
    ],
)
def test_the_scan_finds_private_names_of_project_modules(source: str, expected: list[tuple[int, str]]) -> None:
    assert private_uses(source) == expected


def test_no_test_imports_or_calls_a_private_name_of_a_project_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in private_uses(path.read_text())
    ]
    assert not found, "test through the public API, or make it public:\n" + "\n".join(found)
