"""Every error code the gateway raises is an ErrorCode member, and every member is raised somewhere.

A scan of the source: the code argument of `ApiError(...)` (and of its subclasses' `super().__init__`),
`bad_request(...)`, `not_found(...)` and `sse.error_event(...)`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from source_scan import members_named, parsed

from gateway.error_codes import ErrorCode

# Where each function takes its code when it is given by position.
_CODE_POSITION = {"ApiError": 2, "bad_request": 2, "not_found": 1, "error_event": 1}




def _callee(call: ast.Call, in_api_error: bool) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if not isinstance(func, ast.Attribute):
        return None
    is_super_init = (
        func.attr == "__init__" and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name) and func.value.func.id == "super"
    )  # fmt: skip
    if is_super_init:
        return "ApiError" if in_api_error else None
    return func.attr


def _code_arguments(node: ast.AST, in_api_error: bool = False) -> Iterator[ast.expr]:
    if isinstance(node, ast.ClassDef):
        in_api_error = any(isinstance(base, ast.Name) and base.id == "ApiError" for base in node.bases)
    if isinstance(node, ast.Call) and (name := _callee(node, in_api_error)) in _CODE_POSITION:
        position = _CODE_POSITION[name]
        keyword = [k.value for k in node.keywords if k.arg == "code"]
        yield from keyword or node.args[position:position + 1]
    for child in ast.iter_child_nodes(node):
        yield from _code_arguments(child, in_api_error)


def literal_codes(trees: Iterator[tuple[str, ast.AST]]) -> list[tuple[str, int, str]]:
    """(file, line, text) of each error code given as a string literal."""
    return [
        (name, arg.lineno, arg.value)
        for name, tree in trees
        for arg in _code_arguments(tree)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    ]




def test_no_error_code_is_a_bare_string() -> None:
    assert literal_codes(parsed(("gateway",))) == []


def test_every_member_is_raised_somewhere_and_every_name_used_is_a_member() -> None:
    assert members_named(parsed(("gateway",)), "ErrorCode") == set(ErrorCode.__members__)


def test_the_scan_finds_every_way_a_code_is_given() -> None:
    source = """
raise ApiError(409, "taken", "name_taken", "name")
raise bad_request("no", "field", code="bad_field")
raise not_found("gone", "thing_gone")
write(sse.error_event("cut", "stream_cut"))
class Refused(ApiError):
    def __init__(self) -> None:
        super().__init__(403, "refused", "refused_here")
class Other(Exception):
    def __init__(self) -> None:
        super().__init__(1, 2, "not_a_code")
raise bad_request("uses the default", "field")
raise ApiError(500, "ok", ErrorCode.INTERNAL_ERROR)
"""
    found = literal_codes(iter([("x.py", ast.parse(source))]))
    assert [code for _, _, code in found] == ["name_taken", "bad_field", "thing_gone", "stream_cut", "refused_here"]
