"""docs/ARCHITECTURE.md names the code of each step: every name and path it cites must still exist.

A span in backticks whose first part is one of the project's packages (`gateway.inference.InferenceCall.run`)
is imported as the longest module prefix that exists, then resolved attribute by attribute; a span that
is a path into the checkout (`sql/queries/instances/scheduler.sql`) must exist. A rename that leaves the
page stale fails here.
"""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = frozenset(("gateway", "scheduler", "inventiv", "sql", "providers", "worker"))

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)+/?")


def _spans(text: str) -> list[str]:
    return _CODE_SPAN.findall(text)


def dotted_names(text: str) -> list[str]:
    """The code spans that name something in the project's packages, in order, once each."""
    names = [s for s in _spans(text) if _DOTTED.fullmatch(s) and s.split(".", 1)[0] in PACKAGES]
    return list(dict.fromkeys(names))


def checkout_paths(text: str) -> list[str]:
    """The code spans that are paths into the checkout (a project package or docs/tests/sql folder)."""
    roots = PACKAGES | {"docs", "tests"}
    paths = [s for s in _spans(text) if _PATH.fullmatch(s) and s.split("/", 1)[0] in roots]
    return list(dict.fromkeys(paths))


def resolve(name: str) -> object:
    """The object `name` denotes: its longest importable module prefix, then attributes. Raises
    LookupError naming the part that is missing."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" moves on to a shorter one; a module that exists but
            # fails to import (a missing dependency inside it) is a real error.
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        for depth, attribute in enumerate(parts[split:], start=split):
            try:
                obj = getattr(obj, attribute)
            except AttributeError:
                raise LookupError(f"{'.'.join(parts[:depth])} has no attribute {attribute!r}") from None
        return obj
    raise LookupError(f"no module {parts[0]!r}")


_DOC_TEXT = DOC.read_text()


@pytest.mark.parametrize("name", dotted_names(_DOC_TEXT))
def test_every_name_in_the_architecture_doc_resolves(name: str) -> None:
    resolve(name)


@pytest.mark.parametrize("path", checkout_paths(_DOC_TEXT))
def test_every_path_in_the_architecture_doc_exists(path: str) -> None:
    assert (ROOT / path).exists(), f"docs/ARCHITECTURE.md cites {path}, which is not in the checkout"


def test_the_doc_maps_the_request_the_control_api_and_the_instance_life() -> None:
    names = dotted_names(_DOC_TEXT)
    # The three journeys each start where the code does; an extraction that found nothing would pass
    # the parametrized tests vacuously.
    for entry in (
        "gateway.inference.InferenceCall.run",
        "gateway.control.deployments.deploy",
        "scheduler.driver.Driver.start_due",
        "scheduler.provisioning.advance",
        "scheduler.termination.advance",
    ):
        assert entry in names
    assert len(names) > 80


def test_the_readme_links_the_architecture_doc() -> None:
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text()


def test_only_project_names_and_paths_are_extracted() -> None:
    text = (
        "`gateway.inference.InferenceCall.run` `stream_options.include_usage` `X-Inventiv-Session` "
        "`usage:records` `sql/queries/usage/` `org_slug/model_code` `scheduler.lifecycle` "
        "`gateway.inference.InferenceCall.run`"
    )
    assert dotted_names(text) == ["gateway.inference.InferenceCall.run", "scheduler.lifecycle"]
    assert checkout_paths(text) == ["sql/queries/usage/"]


def test_resolve_finds_modules_classes_methods_and_queries() -> None:
    from gateway.inference import InferenceCall

    assert resolve("gateway.inference.InferenceCall.run") is InferenceCall.run
    module = resolve("scheduler.lifecycle")
    assert isinstance(module, types.ModuleType) and module.__name__ == "scheduler.lifecycle"
    assert callable(resolve("sql.queries.queries.usage.insert_usage_batch"))


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("gateway.inference.InferenceCall.gone", "gateway.inference.InferenceCall has no attribute 'gone'"),
        ("gateway.no_such_module.run", "gateway has no attribute 'no_such_module'"),
        ("scheduler.driver.no_such_function", "scheduler.driver has no attribute 'no_such_function'"),
    ],
)
def test_resolve_refuses_a_stale_name(name: str, missing: str) -> None:
    with pytest.raises(LookupError) as refused:
        resolve(name)
    assert str(refused.value) == missing
