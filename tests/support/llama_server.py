"""A real llama.cpp `llama-server` for tests: built once from llama-cpp-python's sdist, then run on demand.

The sdist pins a llama.cpp revision (vendor/llama.cpp) and carries gguf-py beside it, so the server and
the tiny test model (tiny_gguf.py) always agree. The build is CPU-only, links llama.cpp in (only the
C/C++ runtime stays shared) and targets no particular CPU, so a cache restored on another machine of
the same OS and architecture still runs. It lands in
~/.cache/inventiv/llama.cpp-<version> (INVENTIV_LLAMA_CACHE names another folder) through a rename, so
an interrupted build leaves no half cache behind.

    python -m tests.support.llama_server build    # from the repository root; prints the binary's path
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from providers.mock.processes import free_port

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CACHE_ENV = "INVENTIV_LLAMA_CACHE"
_SDIST_ROOT = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
_VENDOR = f"{_SDIST_ROOT}/vendor/llama.cpp"
_STAMP = "build.json"
BUILD_COMMAND = "python -m tests.support.llama_server build"

CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    # One self-contained binary: nothing to copy but the executable, no rpath into the build folder.
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    # HTTPS is never used against a local test server, and it would link the system's libssl.
    "-DLLAMA_OPENSSL=OFF",
    # The Web UI is built with npm or downloaded from Hugging Face at build time: neither is wanted.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    # Baseline instructions only: a cache built on an AVX-512 runner must not crash an older CPU, and
    # the test model is far too small for SIMD to matter.
    "-DGGML_NATIVE=OFF",
    "-DGGML_SSE42=OFF",
    "-DGGML_AVX=OFF",
    "-DGGML_AVX2=OFF",
    "-DGGML_BMI2=OFF",
    "-DGGML_FMA=OFF",
    "-DGGML_F16C=OFF",
    # ggml's own thread pool instead of libgomp: one less shared library at run time.
    "-DGGML_OPENMP=OFF",
)


class LlamaBuildUnavailable(RuntimeError):
    """llama-server is not built and cannot be built here."""


@dataclass(frozen=True)
class LlamaBuild:
    root: Path

    @property
    def server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def gguf_py(self) -> Path:
        """The vendored gguf-py folder (the one to put on sys.path for `import gguf`)."""
        return self.root / "gguf-py"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "inventiv" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def _recipe() -> dict[str, object]:
    return {"llama-cpp-python": LLAMA_CPP_PYTHON_VERSION, "cmake_args": list(CMAKE_ARGS)}


def find_build() -> LlamaBuild | None:
    """The cached build, if it is complete and was made by this recipe (another one is rebuilt)."""
    build = LlamaBuild(cache_root())
    try:
        stamp = json.loads((build.root / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp != _recipe() or not os.access(build.server, os.X_OK) or not build.gguf_py.is_dir():
        return None
    return build


def missing_tools() -> list[str]:
    """What this machine lacks to build llama-server (empty when it can)."""
    needs = {
        "cmake": ["cmake"],
        "a C compiler": [os.environ.get("CC", ""), "cc", "gcc", "clang"],
        "a C++ compiler": [os.environ.get("CXX", ""), "c++", "g++", "clang++"],
    }
    if not os.environ.get("CMAKE_GENERATOR"):
        needs["make"] = ["make"]
    missing = [what for what, names in needs.items() if not any(name and shutil.which(name) for name in names)]
    if importlib.util.find_spec("pip") is None:
        missing.append(f"pip (in {sys.executable})")
    return missing


def ensure_built() -> LlamaBuild:
    """The cached build, building it first when needed (minutes; a lock serialises concurrent callers)."""
    build = find_build()
    if build is not None:
        return build
    missing = missing_tools()
    if missing:
        raise LlamaBuildUnavailable(f"cannot build llama-server: missing {', '.join(missing)}")
    root = cache_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / f"{root.name}.lock"):
        build = find_build()  # another process may have finished it while this one waited
        if build is not None:
            return build
        for leftover in root.parent.glob(f".{root.name}.*"):  # from a build that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".{root.name}.", dir=root.parent) as tmp:
            _replace(_build(Path(tmp)), root)
    build = find_build()
    assert build is not None, f"built llama-server is incomplete in {root}"
    return build


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(work: Path) -> Path:
    """Download, configure, compile and stage the build in `work`; returns the staged folder."""
    _log(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist)")
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
          f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "--dest", str(work / "download")])
    (sdist,) = (work / "download").glob("*.tar.gz")
    _log("extracting vendor/llama.cpp")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"{_VENDOR}/")]
        archive.extractall(work / "src", members=members, filter="data")
    source, build_dir = work / "src" / _VENDOR, work / "build"
    _log("configuring")
    _run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_ARGS])
    jobs = os.cpu_count() or 2
    _log(f"compiling llama-server with {jobs} jobs (several minutes)")
    _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "--parallel", str(jobs)])
    staged = work / "out"
    (staged / "bin").mkdir(parents=True)
    shutil.copy2(build_dir / "bin" / "llama-server", staged / "bin" / "llama-server")
    shutil.copytree(source / "gguf-py", staged / "gguf-py")
    shutil.copy2(source / "LICENSE", staged / "LICENSE")
    _run([str(staged / "bin" / "llama-server"), "--version"])  # it starts: no missing shared library
    (staged / _STAMP).write_text(json.dumps(_recipe(), indent=2) + "\n")
    return staged


def _replace(staged: Path, root: Path) -> None:
    """Move `staged` to `root`; a stale build there is renamed away first, then deleted."""
    if root.exists():
        stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
        root.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    staged.rename(root)


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise LlamaBuildUnavailable(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def _log(message: str) -> None:
    print(f"[llama-server build] {message}", file=sys.stderr, flush=True)


# --- running ------------------------------------------------------------------------------------------


@dataclass
class LlamaServer:
    """A started llama-server process listening on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    api_key: str
    model: Path
    log_path: Path
    # /health statuses answered while it started: 503 while the model loads, then 200.
    startup_statuses: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _command(build: LlamaBuild, model: Path, *, port: int, api_key: str, extra_args: Sequence[str]) -> list[str]:
    return [
        str(build.server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--api-key", api_key, "--metrics", "--no-ui",
        # 2 slots of 4096 tokens; one thread, because the model is tiny and spinning threads only
        # compete with the test process for the CPU.
        "-c", "8192", "-np", "2", "-t", "1",
        *extra_args,
    ]


def start_server(
    build: LlamaBuild,
    model: Path,
    *,
    api_key: str,
    log_path: Path,
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> LlamaServer:
    """Start llama-server on a free port and return once /health answers 200."""
    for _ in range(3):  # the free port can be taken between picking and binding it
        server = _spawn(build, model, api_key=api_key, log_path=log_path, extra_args=extra_args)
        if _wait_healthy(server, timeout_s):
            return server
        stop_server(server)
        if "couldn't bind" not in _log_tail(log_path):
            break
    raise RuntimeError(f"llama-server did not become healthy; its log ({log_path}) ends with:\n{_log_tail(log_path)}")


def stop_server(server: LlamaServer, timeout_s: float = 10.0) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)  # llama-server stops its loop and frees the model
        try:
            server.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
    server.process.wait()


def _spawn(
    build: LlamaBuild, model: Path, *, api_key: str, log_path: Path, extra_args: Sequence[str]
) -> LlamaServer:
    port = free_port(())
    command = _command(build, model, port=port, api_key=api_key, extra_args=extra_args)
    # llama-server reads LLAMA_ARG_* / LLAMA_API_KEY: a developer's settings must not change the server.
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLAMA_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    return LlamaServer(process, port, api_key, model, log_path)


def _wait_healthy(server: LlamaServer, timeout_s: float) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with opener.open(f"{server.base_url}/health", timeout=1.0) as response:
                server.startup_statuses.append(response.status)
                return True
        except urllib.error.HTTPError as error:  # 503 while the model loads
            error.close()
            server.startup_statuses.append(error.code)
        except OSError:  # not listening yet
            pass
        time.sleep(0.005)  # the tiny model loads in ~10 ms: poll often enough to see a 503 now and then
    return False


# A sample line of /metrics (Prometheus text format): `llamacpp:requests_processing 0`.
_SAMPLE = re.compile(r"^(llamacpp:\w+) ([0-9.e+-]+)$", re.MULTILINE)


async def metrics(server: LlamaServer) -> dict[str, float]:
    """The server's `llamacpp:*` counters and gauges from GET /metrics (started with --metrics)."""
    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics", headers=server.headers) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return {name: float(value) for name, value in _SAMPLE.findall(text)}


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.llama_server", description="Build llama-server.")
    parser.add_argument("command", choices=["build"], help="build llama-server into the cache (if needed)")
    parser.parse_args(argv)
    try:
        build = ensure_built()
    except LlamaBuildUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    print(build.server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
