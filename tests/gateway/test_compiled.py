"""The compiled gateway (setup.py's `INVENTIV_MYPYC=1`, what a production install runs) passes the
gateway's tests.

`benchmarks/compiled.py` builds it from this checkout (cached by content); a child pytest then runs
tests/gateway against it, less the tests marked `interpreted_only` (they hand the code a stand-in of
another class, or patch a module's name, and a compiled module takes neither). In that child, the
first test below checks that every module setup.py names is the compiled one.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compiled

REPO = compiled.REPO
# Set in the child run: the tests run on the compiled gateway.
CHILD = "INVENTIV_TEST_COMPILED"
CHECK = "tests/gateway/test_compiled.py::test_the_modules_setup_py_names_are_the_compiled_ones"


def compiled_modules() -> list[str]:
    """The module names of setup.py's COMPILED list."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED" for t in node.targets):
            paths = ast.literal_eval(node.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_setup_py_names_existing_modules_of_the_request_path() -> None:
    names = compiled_modules()
    assert "gateway.inference" in names and "gateway.inference_connection" in names and "gateway.upstream" in names
    for name in names:
        assert (REPO / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.skipif(os.environ.get(CHILD) != "1", reason="runs in the child run on the compiled gateway")
def test_the_modules_setup_py_names_are_the_compiled_ones() -> None:
    for name in compiled_modules():
        path = importlib.import_module(name).__file__
        assert path is not None and path.endswith(".so"), f"{name} was imported from {path}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the run it starts")
def test_the_gateway_tests_pass_on_the_compiled_gateway() -> None:
    folder = compiled.build()
    # No coverage in the child: a compiled module has no lines to trace, the rest is measured here.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "COV_CORE"))}
    env[CHILD] = "1"
    argv = [
        sys.executable, "-m", "pytest", "tests/gateway", "-m", "not interpreted_only", "-p", "no:cacheprovider",
        "-q", "-rA", "--no-header", "-o", f"pythonpath={folder} .",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1100, check=False)
    summary = done.stdout[-6000:]
    where = f"the gateway's tests on the compiled gateway ({folder})"
    assert done.returncode == 0, f"{where}:\n{summary}\n{done.stderr[-3000:]}"
    assert f"PASSED {CHECK}" in done.stdout, f"the child run did not run on the compiled modules:\n{summary}"


def test_the_build_is_named_by_what_it_is_built_from(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "gateway").mkdir(parents=True)
    (repo / "setup.py").write_text("COMPILED = []\n")
    (repo / "gateway" / "a.py").write_text("x = 1\n")
    first = compiled.digest(repo)
    assert compiled.digest(repo) == first
    (repo / "gateway" / "a.py").write_text("x = 2\n")
    assert compiled.digest(repo) != first
