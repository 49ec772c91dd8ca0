"""benchmarks/locustfile.py: it imports, builds its requests and reads streams as the gateway sends them.

Locust is not in the test environment (it comes with gevent, which patches the standard library on
import): the locustfile is loaded here against a stand-in `locust` module, and `locust --list` runs it for
real when `make load-tools` installed locust. The load run itself is CI's `make stack-checks`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"


class _Hook:
    def __init__(self) -> None:
        self.listeners: list[Callable[..., Any]] = []

    def add_listener(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.listeners.append(fn)
        return fn


def _fake_locust() -> tuple[ModuleType, ModuleType]:
    locust, env = ModuleType("locust"), ModuleType("locust.env")
    vars(locust).update(
        HttpUser=type("HttpUser", (), {}),
        between=lambda a, b: (a, b),
        task=lambda weight: lambda fn: fn,
        events=SimpleNamespace(test_start=_Hook(), quitting=_Hook()),
    )
    vars(env).update(Environment=object)
    return locust, env


@pytest.fixture
def locustfile(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    locust, env = _fake_locust()
    monkeypatch.setitem(sys.modules, "locust", locust)
    monkeypatch.setitem(sys.modules, "locust.env", env)
    monkeypatch.setenv("API_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("API_KEY", "ik_test")
    monkeypatch.delenv("MODEL", raising=False)
    spec = importlib.util.spec_from_file_location("locustfile_under_test", LOCUSTFILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_imports_with_its_defaults(locustfile: ModuleType) -> None:
    assert locustfile.ChatUser.host == "http://127.0.0.1:9"
    assert locustfile.MODEL == "demo/qwen-small" and locustfile.KEY == "ik_test"
    events = sys.modules["locust"].events
    assert events.test_start.listeners and events.quitting.listeners


def test_chat_bodies(locustfile: ModuleType) -> None:
    assert locustfile.chat_body("hi") == {
        "model": "demo/qwen-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
    }  # fmt: skip
    assert locustfile.chat_body("hi", stream=True)["stream"] is True
    assert "stream_options" not in locustfile.chat_body("hi", stream=True)
    assert locustfile.chat_body("hi", stream=True, include_usage=True)["stream_options"] == {"include_usage": True}


def test_read_stream(locustfile: ModuleType) -> None:
    usage = b'{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}'
    lines = [
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"alpha "}}]}', b"",
        b": ping", b"",
        b'data: {"choices":[{"index":0,"delta":{"content":"bravo "}}]}', b"",
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}', b"",
        b'data: {"choices":[],"usage":' + usage + b"}", b"",
        b"data: [DONE]", b"",
    ]  # fmt: skip
    assert locustfile.read_stream(lines) == (2, {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, True)
    assert locustfile.read_stream(lines[:4]) == (1, None, False)


def _real_locust() -> str | None:
    venv = Path(os.environ.get("LOAD_VENV", Path.home() / ".cache" / "inventiv" / "load-venv")) / "bin" / "locust"
    return str(venv) if venv.exists() else shutil.which("locust")


@pytest.mark.slow
@pytest.mark.skipif(_real_locust() is None, reason="locust is not installed (make load-tools)")
def test_real_locust_loads_it() -> None:
    locust = _real_locust()
    assert locust is not None
    done = subprocess.run([locust, "-f", str(LOCUSTFILE), "--list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ChatUser" in done.stdout
