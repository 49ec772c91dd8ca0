"""Every `queries.<group>.<name>` the code names exists, and every call passes exactly the query's parameters.

`queries` is built by aiosql at run time, so neither mypy nor ruff sees a misspelt query or parameter: this
reads the source with `ast` instead. A call is `queries.<group>.<name>(conn, k=v, ...)`, also through a
local alias (`catalog = queries.catalog`, `mark = queries.g.a if x else queries.g.b`). A `**` argument is
read where it is a literal dict, `patch_params(body, SPEC)` or a helper that returns one (the keys come from
the spec, not the body); a query handed to `fetch_page` gets the parameters `fetch_page` passes, found by
running it on an empty query string; one handed to `PreparedQuery` is checked at each `<name>.value(conn, ...)`
call of the name it is assigned to. Anything else must be listed in UNRESOLVED with the reason.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import inspect
import re
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import sql.queries
from gateway import state
from gateway.control.input_validation import FieldSpec, patch_params
from gateway.control.pagination import PAGE_PARAMS, Keyset, fetch_page
from sql.prepared import PreparedQuery
from sql.queries import queries

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("gateway", "scheduler", "inventiv", "sql", "providers", "worker", "benchmarks", "scripts", "tests/support")

# `queries.<attribute>` that is aiosql's own, not a group.
QUERIES_ATTRIBUTES = frozenset({"available_queries"})

# Functions that take a query and pass it on to fetch_page unchanged, with their first four arguments
# (request, spec, keyset, query) and no fixed parameters.
FETCH_PAGE_FORWARDERS = frozenset({"gateway.control.cloud_catalog._list"})

# (file, query): why its `**` argument is not read here. Its named keywords are still checked.
UNRESOLVED = {
    ("inventiv/organizations.py", "api_keys.update_api_key_limits"): (
        "set_<column>/<column> built in a loop over KEY_LIMITS; run by tests/inventiv/test_cli.py "
        "(test_keys_limits_reach_a_running_gateway)"
    ),
}

Evaluate = Callable[[ast.expr], Any]
_NOT_FOUND = object()


@dataclass(frozen=True, slots=True)
class Use:
    """One place that names a query: `names` are the queries it may be (two for a conditional alias)."""

    where: str
    names: tuple[str, ...]
    # The keyword parameters passed; None where the query is only named (an attribute read, not a call).
    passed: frozenset[str] | None = None
    positional: int = 0
    # What kept some of the passed parameters from being read (a `**` argument, a callee not followed).
    unresolved: str | None = None


def catalog() -> dict[str, frozenset[str]]:
    """Every loaded query (group.name, `_cursor` forms included) with its parameters."""
    out = {}
    for name in queries.available_queries:
        group, query = name.split(".")
        out[name] = frozenset(getattr(getattr(queries, group), query).parameters or ())
    return out


Known = Mapping[str, frozenset[str]]
Listed = Mapping[tuple[str, str], str]


def problems(uses: list[Use], known: Known, unresolved: Listed) -> list[str]:
    """What is wrong, one "file:line: ..." line each."""
    out = []
    groups = {name.split(".")[0] for name in known}
    for use in uses:
        for name in use.names:
            out += [f"{use.where}: {msg}" for msg in _check(use, name, known, groups, unresolved)]
    return out


def _check(use: Use, name: str, known: Known, groups: set[str], unresolved: Listed) -> list[str]:
    group = name.split(".")[0]
    if group not in groups:
        return [f"no query group {group!r}"]
    if name not in known:
        return [f"no query {name!r}"]
    out = []
    if use.positional:
        out.append(f"{name}: {use.positional} positional argument(s) after the connection (queries take keywords)")
    expected = known[name]
    extra = sorted((use.passed or frozenset()) - expected)
    if extra:
        out.append(f"{name}: takes no parameter(s) {', '.join(extra)}")
    if use.unresolved is not None:
        if (use.where.split(":")[0], name) not in unresolved:
            out.append(f"{name}: cannot read {use.unresolved}; resolve it or list it in UNRESOLVED with the reason")
        return out
    if use.passed is None:
        return out
    missing = sorted(expected - use.passed)
    if missing:
        out.append(f"{name}: missing parameter(s) {', '.join(missing)}")
    return out


def find_uses(source: str, path: str, evaluate: Evaluate) -> list[Use]:
    """The query uses in one module. `evaluate` gives the value of a module-level name or attribute chain."""
    tree = ast.parse(source)
    if not _imports_queries(tree):
        return []
    scanner = _Scanner(path, evaluate, tree=tree)
    scanner.visit(tree)
    return scanner.uses


def _imports_queries(tree: ast.AST) -> bool:
    imports = (node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "sql.queries")
    return any(alias.name == "queries" for node in imports for alias in node.names)


# What a name is bound to in one scope: the value assigned, the import that bound it, None when bound twice.
Binding = ast.expr | ast.ImportFrom | None


def _assignments(scope: ast.AST) -> dict[str, Binding]:
    """Names bound once by a plain `name = value`, or by `from m import n`, in this scope (not in nested
    functions) and not changed in place there."""
    out: dict[str, Binding] = {}
    for node in _own_nodes(scope):
        if isinstance(node, ast.ImportFrom) and not isinstance(scope, ast.Module):
            out.update({alias.asname or alias.name: node for alias in node.names})
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        out[name] = None if name in out else value
    for name in _mutated(scope):
        out[name] = None
    return out


# dict methods that change a dict in place: a name they are called on is not the dict it was bound to.
_MUTATORS = frozenset({"update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__"})


def _mutated(scope: ast.AST) -> Iterator[str]:
    for node in _own_nodes(scope):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            target = node.value
        elif isinstance(node, ast.AugAssign):
            target = node.target
        elif isinstance(node, ast.Attribute) and node.attr in _MUTATORS:
            target = node.value
        else:
            continue
        if isinstance(target, ast.Name):
            yield target.id


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(scope):
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            yield from _own_nodes(child)


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, evaluate: Evaluate, scopes: list[dict[str, Binding]] | None = None,
                 tree: ast.AST | None = None) -> None:  # fmt: skip
        self.path = path
        # The whole module, where a prepared query's runs are looked for (`prepared`).
        self.tree = tree or ast.Module(body=[], type_ignores=[])
        self.evaluate = evaluate
        self.scopes = scopes or []
        self.uses: list[Use] = []
        self._seen: set[int] = set()

    def _scoped(self, node: ast.AST) -> None:
        self.scopes.append(_assignments(node))
        self.generic_visit(node)
        self.scopes.pop()

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def lookup(self, name: str) -> ast.expr | None:
        for scope in reversed(self.scopes):
            if name in scope:
                bound = scope[name]
                return bound if isinstance(bound, ast.expr) else None
        return None

    def value(self, expr: ast.expr) -> Any:
        """The value of a name or attribute chain, the module's or one a function imports for itself."""
        root = expr
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name):
            for scope in reversed(self.scopes):
                bound = scope.get(root.id)
                if isinstance(bound, ast.ImportFrom) and bound.module is not None and bound.level == 0:
                    name = next(a.name for a in bound.names if (a.asname or a.name) == root.id)
                    imported = getattr(importlib.import_module(bound.module), name)
                    return _evaluator({root.id: imported})(expr)
        return self.evaluate(expr)

    def group_of(self, expr: ast.expr, depth: int = 0) -> str | None:
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "queries":
            return None if expr.attr in QUERIES_ATTRIBUTES else expr.attr
        if isinstance(expr, ast.Name) and depth < 5 and (value := self.lookup(expr.id)) is not None:
            return self.group_of(value, depth + 1)
        return None

    def queries_of(self, expr: ast.expr, depth: int = 0) -> tuple[str, ...]:
        if isinstance(expr, ast.Attribute) and (group := self.group_of(expr.value)) is not None:
            return (f"{group}.{expr.attr}",)
        if isinstance(expr, ast.Name) and depth < 5 and (value := self.lookup(expr.id)) is not None:
            return self.queries_of(value, depth + 1)
        if isinstance(expr, ast.IfExp):
            body, orelse = self.queries_of(expr.body, depth), self.queries_of(expr.orelse, depth)
            return body + orelse if body and orelse else ()
        return ()

    def visit_Call(self, node: ast.Call) -> None:
        names = self.queries_of(node.func)
        if names:
            self._seen.add(id(node.func))
            passed, unresolved = self.keywords(node.keywords)
            self._use(node, names, passed, max(len(node.args) - 1, 0), unresolved)
        for arg in (*node.args, *(k.value for k in node.keywords)):
            if (handed := self.queries_of(arg)) and id(arg) not in self._seen:
                self._seen.add(id(arg))
                self._use(node, handed, *self.handed_on(node, arg))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self._seen and (names := self.queries_of(node)):
            self._seen.add(id(node))
            self._use(node, names)
        self.generic_visit(node)

    def _use(
        self, node: ast.AST, names: tuple[str, ...], passed: frozenset[str] | None = None, positional: int = 0,
        unresolved: str | None = None,
    ) -> None:
        self.uses.append(Use(f"{self.path}:{getattr(node, 'lineno', 0)}", names, passed, positional, unresolved))

    def keywords(self, keywords: list[ast.keyword]) -> tuple[frozenset[str], str | None]:
        names = {k.arg for k in keywords if k.arg is not None}
        unresolved = []
        for k in keywords:
            if k.arg is None:
                keys = self.kwargs_keys(k.value)
                if keys is None:
                    unresolved.append(f"**{ast.unparse(k.value)}")
                else:
                    names |= keys
        return frozenset(names), ", ".join(unresolved) or None

    def kwargs_keys(self, expr: ast.expr, depth: int = 0) -> frozenset[str] | None:
        """The keys a `**` argument gives, or None where this cannot tell."""
        if depth > 5:
            return None
        if isinstance(expr, ast.Name):
            value = self.lookup(expr.id)
            return None if value is None else self.kwargs_keys(value, depth + 1)
        if isinstance(expr, ast.Dict):
            keys = [k.value for k in expr.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            return frozenset(keys) if len(keys) == len(expr.keys) else None
        if not isinstance(expr, ast.Call):
            return None
        fn = self.value(expr.func)
        if fn is patch_params and len(expr.args) == 2:
            spec = self.value(expr.args[1])
            return None if spec is _NOT_FOUND else frozenset(patch_params({}, spec))
        if inspect.isfunction(fn):
            return _returned_keys(fn, depth)
        return None

    def handed_on(self, call: ast.Call, query: ast.expr) -> tuple[frozenset[str] | None, int, str | None]:
        """The parameters a query handed to another function gets from it."""
        callee = self.value(call.func)
        args = call.args
        if callee is not _NOT_FOUND and f"{callee.__module__}.{callee.__qualname__}" in FETCH_PAGE_FORWARDERS:
            callee, args = fetch_page, args[:4]
        if callee is PreparedQuery and len(args) == 2 and args[1] is query:
            return self.prepared(call, query)
        if callee is not fetch_page or len(args) != 4 or args[3] is not query:
            return None, 0, f"a query handed to {ast.unparse(call.func)}, which this check does not follow"
        spec, keyset = self.value(args[1]), self.value(args[2])
        if spec is _NOT_FOUND or keyset is _NOT_FOUND:
            return None, 0, f"fetch_page's spec or keyset ({ast.unparse(args[1])}, {ast.unparse(args[2])})"
        fixed, unresolved = self.keywords(call.keywords)
        return fetch_page_params(spec, keyset, fixed), 0, unresolved

    def prepared(self, call: ast.Call, query: ast.expr) -> tuple[frozenset[str] | None, int, str | None]:
        """A query handed to `PreparedQuery` is only named there: each `<name>.value(conn, ...)` call of the
        module name it is assigned to is a use of its own, checked as a call of the query."""
        assigned = [
            node.targets[0].id for node in ast.walk(self.tree)
            if isinstance(node, ast.Assign) and node.value is call and isinstance(node.targets[0], ast.Name)
        ]  # fmt: skip
        if len(assigned) != 1:
            return None, 0, "a PreparedQuery not assigned to one module name"
        runs = [
            node for node in ast.walk(self.tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "value"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == assigned[0]
        ]  # fmt: skip
        for run in runs:
            passed, unresolved = self.keywords(run.keywords)
            self._use(run, self.queries_of(query), passed, max(len(run.args) - 1, 0), unresolved)
        return (None, 0, None) if runs else (None, 0, f"{assigned[0]}, a PreparedQuery never run")


def _returned_keys(fn: Any, depth: int) -> frozenset[str] | None:
    """The `**` keys of a helper whose last statement returns something kwargs_keys can read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError):
        return None
    func = tree.body[0]
    if not isinstance(func, ast.FunctionDef) or not isinstance(ret := func.body[-1], ast.Return) or ret.value is None:
        return None
    helper = _Scanner(fn.__module__, _evaluator(fn.__globals__), [_assignments(func)])
    return helper.kwargs_keys(ret.value, depth + 1)


def fetch_page_params(spec: Any, keyset: Any, fixed: frozenset[str]) -> frozenset[str]:
    """The keyword parameters fetch_page gives its query, read by running it on an empty query string."""
    seen: set[str] = set()

    async def query(conn: Any, **params: Any) -> AsyncIterator[dict[str, Any]]:
        seen.update(params)
        rows: list[dict[str, Any]] = []
        for row in rows:
            yield row

    class Pool:
        def acquire(self) -> contextlib.nullcontext[None]:
            return contextlib.nullcontext()

    app = web.Application()
    app[state.DB] = Pool()  # type: ignore[misc]
    request = make_mocked_request("GET", "/", app=app)
    asyncio.run(fetch_page(request, spec, keyset, query, **dict.fromkeys(fixed)))
    return frozenset(seen)


def _evaluator(namespace: Mapping[str, Any]) -> Evaluate:
    """The value of a name or attribute chain in `namespace`; _NOT_FOUND for anything else (nothing is called)."""

    def evaluate(expr: ast.expr) -> Any:
        if not all(isinstance(n, ast.Name | ast.Attribute | ast.Load) for n in ast.walk(expr)):
            return _NOT_FOUND
        try:
            return eval(compile(ast.Expression(expr), "<query-call>", "eval"), dict(namespace))
        except (NameError, AttributeError):
            return _NOT_FOUND

    return evaluate


def _module_evaluator(path: Path) -> Evaluate:
    """Evaluates in the module at `path`, imported only when a name needs its value."""
    module: list[ModuleType] = []

    def evaluate(expr: ast.expr) -> Any:
        if not module:
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            module.append(importlib.import_module(name))
        return _evaluator(vars(module[0]))(expr)

    return evaluate


def project_uses() -> list[Use]:
    uses = []
    for root in SCANNED:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            uses += find_uses(path.read_text(), rel, _module_evaluator(path))
    return uses


_USES = project_uses()
_KNOWN = catalog()


def test_every_query_call_matches_its_query() -> None:
    found = problems(_USES, _KNOWN, UNRESOLVED)
    assert not found, "\n".join(found)


def test_the_example_in_the_docstring_of_sql_queries_is_a_real_call() -> None:
    example = re.search(r"`await (queries\.[^`]+)`", sql.queries.__doc__ or "")
    assert example is not None
    uses = find_uses(_HEADER + example.group(1).replace("...", "None"), "sql/queries.py", _evaluator({}))
    assert len(uses) == 1
    assert problems(uses, _KNOWN, {}) == []


def test_the_scan_sees_the_calls() -> None:
    called = {name for use in _USES if use.passed is not None for name in use.names}
    assert {"instances.get_instance_for_scheduler", "catalog.list_catalog_models", "api_keys.list_api_keys"} <= called


def test_every_unresolved_entry_is_still_needed() -> None:
    live = {(use.where.split(":")[0], name) for use in _USES if use.unresolved for name in use.names}
    assert set(UNRESOLVED) - live == set()


def test_every_query_is_used() -> None:
    named = {name for use in _USES for name in use.names}
    unused = sorted(name for name in _KNOWN if not name.endswith("_cursor") and name not in named)
    assert not unused, "named nowhere in " + ", ".join(SCANNED) + ": " + ", ".join(unused)


# The checker itself, on small sources against a made-up catalog: it must catch what it is for.
_FAKE = {"g.get": frozenset({"a", "b"}), "g.get_cursor": frozenset({"a", "b"}), "g.page": frozenset(
    {"organization_id", "status", "limit", "after_id"})}
_HEADER = "from sql.queries import queries\n"
_NAMESPACE = {
    "patch_params": patch_params,
    "fetch_page": fetch_page,
    "SPEC": {"a": FieldSpec("str")},
    "PAGE_SPEC": {"status": FieldSpec("str"), **PAGE_PARAMS},
    "BY_ID": Keyset(("id", "uuid")),
}


def _problems(body: str, unresolved: Listed | None = None) -> list[str]:
    uses = find_uses(_HEADER + textwrap.dedent(body), "m.py", _evaluator(_NAMESPACE))
    return problems(uses, _FAKE, unresolved or {})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("queries.g.get(conn, a=1, b=2)", []),
        ("queries.g.get_cursor(conn, a=1, b=2)", []),
        ("queries.g.gte(conn, a=1, b=2)", ["m.py:2: no query 'g.gte'"]),
        ("queries.h.get(conn, a=1, b=2)", ["m.py:2: no query group 'h'"]),
        ("queries.g.get(conn, a=1)", ["m.py:2: g.get: missing parameter(s) b"]),
        ("queries.g.get(conn, a=1, b=2, c=3)", ["m.py:2: g.get: takes no parameter(s) c"]),
        ("queries.g.get(conn, 1, b=2)", [
            "m.py:2: g.get: 1 positional argument(s) after the connection (queries take keywords)",
            "m.py:2: g.get: missing parameter(s) a",
        ]),
        ("sql = queries.g.nope.sql", ["m.py:2: no query 'g.nope'"]),
        ("names = queries.available_queries", []),
        ("def f(conn):\n    g = queries.g\n    return g.get(conn, a=1)", ["m.py:4: g.get: missing parameter(s) b"]),
        ("def f(conn, x):\n    q = queries.g.get if x else queries.g.nope\n    return q(conn, a=1, b=2)",
         ["m.py:3: no query 'g.nope'", "m.py:4: no query 'g.nope'"]),
        ("def f(conn):\n    q = queries.g.get\n    return q(conn, a=1, c=2)",
         ["m.py:4: g.get: takes no parameter(s) c", "m.py:4: g.get: missing parameter(s) b"]),
    ],
)
def test_the_checker_reads_names_and_parameters(body: str, expected: list[str]) -> None:
    assert _problems(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def f(conn):\n    p = {'b': 2}\n    return queries.g.get(conn, a=1, **p)", []),
        ("def f(conn):\n    p = {'c': 2}\n    return queries.g.get(conn, a=1, **p)",
         ["m.py:4: g.get: takes no parameter(s) c", "m.py:4: g.get: missing parameter(s) b"]),
        # The keys of patch_params come from the spec: set_a is not a parameter of g.get.
        ("def f(conn, body):\n    return queries.g.get(conn, b=1, **patch_params(body, SPEC))",
         ["m.py:3: g.get: takes no parameter(s) set_a"]),
        # A dict changed after it was bound is not the literal it was bound to.
        ("def f(conn):\n    p = {}\n    p['b'] = 2\n    return queries.g.get(conn, a=1, **p)",
         ["m.py:5: g.get: cannot read **p; resolve it or list it in UNRESOLVED with the reason"]),
        ("def f(conn, p):\n    return queries.g.get(conn, a=1, c=3, **p)", [
            "m.py:3: g.get: takes no parameter(s) c",
            "m.py:3: g.get: cannot read **p; resolve it or list it in UNRESOLVED with the reason",
        ]),
    ],
)
def test_the_checker_reads_double_star_arguments(body: str, expected: list[str]) -> None:
    assert _problems(body) == expected


def test_a_listed_double_star_argument_still_has_its_keywords_checked() -> None:
    listed = {("m.py", "g.get"): "built in a loop"}
    assert _problems("def f(conn, p):\n    return queries.g.get(conn, a=1, **p)", listed) == []
    assert _problems("def f(conn, p):\n    return queries.g.get(conn, c=1, **p)", listed) == [
        "m.py:3: g.get: takes no parameter(s) c"
    ]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("fetch_page(request, PAGE_SPEC, BY_ID, queries.g.page, organization_id=org)", []),
        ("fetch_page(request, PAGE_SPEC, BY_ID, queries.g.page)",
         ["m.py:2: g.page: missing parameter(s) organization_id"]),
        ("fetch_page(request, SPEC, BY_ID, queries.g.page, organization_id=org)",
         ["m.py:2: g.page: takes no parameter(s) a", "m.py:2: g.page: missing parameter(s) status"]),
        ("other(request, queries.g.page)", [
            "m.py:2: g.page: cannot read a query handed to other, which this check does not follow; "
            "resolve it or list it in UNRESOLVED with the reason"
        ]),
    ],
)
def test_the_checker_follows_a_query_into_fetch_page(call: str, expected: list[str]) -> None:
    assert _problems(call) == expected


def test_a_module_that_does_not_import_queries_is_not_read() -> None:
    assert find_uses("queries.g.nope(conn)", "m.py", _evaluator({})) == []
