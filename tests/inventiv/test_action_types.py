"""Every action type the code writes to `action_logs` is an ActionType member, and every member is written.

The column is plain text, so the database cannot hold the list: this scan of the source does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from source_scan import members_named, parsed

from inventiv.action_types import ActionType

# scheduler/action_log.py's functions take the action type as their third argument.
_LOGGING = {"start", "logged", "open_span", "close_span", "record"}




def _action_type_arguments(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        yield from (k.value for k in node.keywords if k.arg == "action_type")
        func = node.func
        is_logging = (
            isinstance(func, ast.Attribute) and func.attr in _LOGGING
            and isinstance(func.value, ast.Name) and func.value.id == "action_log"
        )  # fmt: skip
        if is_logging and len(node.args) >= 3:
            yield node.args[2]


def literal_action_types(trees: Iterator[tuple[str, ast.AST]]) -> list[tuple[str, int, str]]:
    """(file, line, text) of each action type passed as a string literal."""
    return [
        (name, arg.lineno, arg.value)
        for name, tree in trees
        for arg in _action_type_arguments(tree)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    ]




def test_no_action_type_is_written_as_a_bare_string() -> None:
    assert literal_action_types(parsed()) == []


def test_every_member_is_written_somewhere_and_every_name_used_is_a_member() -> None:
    assert members_named(parsed(), "ActionType") == set(ActionType.__members__)


def test_the_scan_finds_literals_and_members() -> None:
    source = """
action_log.record(pool, iid, "NEW_STEP", error=exc)
queries.action_logs.insert_api_action_log(conn, instance_id=i, action_type="OTHER", metadata=None)
async with action_log.logged(pool, iid, ActionType.PROVIDER_START):
    pass
"""
    tree = ast.parse(source)
    assert literal_action_types(iter([("x.py", tree)])) == [("x.py", 2, "NEW_STEP"), ("x.py", 3, "OTHER")]
    assert members_named(iter([("x.py", tree)]), "ActionType") == {"PROVIDER_START"}
