"""The gateway as a production install runs it: the request path compiled with mypyc (setup.py's
`INVENTIV_MYPYC=1`), built from this checkout into a folder of its own.

    python -m benchmarks.compiled      # build if needed; print the folder

The folder holds a copy of the `gateway` package with the compiled modules beside their source (Python
imports an extension module before a `.py` of the same name) and mypyc's shared library: a process
started with `PYTHONPATH=<folder>` (`env()`) runs the compiled gateway, everything else from the
checkout. `make bench` measures that gateway, as production would run it; the tests of
tests/gateway/test_compiled.py run the gateway's tests against it.

Built once per content of the package, setup.py, mypy's version and Python's, in
~/.cache/inventiv/gateway-mypyc-<digest> (`INVENTIV_MYPYC_CACHE` names another parent folder), through a
rename, so an interrupted build leaves nothing half made; about a minute of one core.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Marks a finished build (written last, before the rename).
_DONE = "BUILT"
_PREFIX = "gateway-mypyc-"


class BuildFailed(RuntimeError):
    pass


def cache_parent() -> Path:
    configured = os.environ.get("INVENTIV_MYPYC_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "inventiv"


def digest(repo: Path = REPO) -> str:
    """What a build depends on: the package's files, setup.py, mypy's version, Python's."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{importlib.metadata.version('mypy')}\0".encode())
    for path in sorted([repo / "setup.py", *(repo / "gateway").rglob("*.py")]):
        h.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build(repo: Path = REPO) -> Path:
    """The folder of this checkout's compiled gateway, built first if there is none."""
    parent = cache_parent()
    built_from = digest(repo)
    dest = parent / f"{_PREFIX}{built_from}"
    if (dest / _DONE).exists():
        return dest
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=parent) as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(repo / "gateway", tree / "gateway", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        env = {**os.environ, "INVENTIV_MYPYC": "1", "INVENTIV_MYPYC_BUILD": str(Path(tmp) / "c")}
        argv = [sys.executable, "setup.py", "build_ext", "--build-lib", str(tree), "--build-temp", str(Path(tmp) / "o")]
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildFailed(f"mypyc build failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        (tree / _DONE).write_text(built_from + "\n")
        try:
            tree.rename(dest)
        except OSError:
            if not (dest / _DONE).exists():  # not a concurrent build that finished first
                raise
    for stale in parent.glob(f"{_PREFIX}*"):
        if stale != dest:
            shutil.rmtree(stale, ignore_errors=True)
    return dest


def for_run(interpreted: bool) -> Path | None:
    """What a benchmark runs: None with `--interpreted`, else the compiled build (built if need be);
    exits naming the failure when the build fails."""
    if interpreted:
        return None
    print("building the compiled gateway (benchmarks/compiled.py; cached)", file=sys.stderr, flush=True)
    try:
        return build()
    except BuildFailed as exc:
        raise SystemExit(f"the compiled gateway could not be built: {exc}") from None


def describe(folder: Path | None) -> str:
    return "compiled with mypyc (setup.py)" if folder is not None else "interpreted (--interpreted)"


def env(folder: Path) -> dict[str, str]:
    """The environment variables that make a Python process run the compiled gateway of `folder`."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def main() -> int:
    try:
        print(build())
    except BuildFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
