"""benchmarks/locustfile.py: it imports, builds its requests, reads streams as the gateway sends them and
fails the answers it must (status, session affinity, content, usage).

Locust is not in the test environment (it comes with gevent, which patches the standard library on
import): the locustfile is loaded here against a stand-in `locust` module, and `locust --list` runs it for
real when `make load-tools` installed locust. The load run itself is CI's `make stack-checks`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
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


# -- ChatUser's verdicts, on the stand-in HttpUser with a stand-in client ------------------------------------

A = "aaaaaaaa-0000-0000-0000-000000000000"
B = "bbbbbbbb-0000-0000-0000-000000000000"
CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"alpha "}}]}'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
DONE = b"data: [DONE]"
ANSWER = {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 16}}


class _Response:
    """What `self.client.post(..., catch_response=True)` gives: the answer, and the failures reported on it."""

    def __init__(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: Any = None,
        lines: Sequence[bytes] | Exception = (),
    ) -> None:
        self.status_code = status
        self.headers = {"X-Inventiv-Instance": A} if headers is None else headers
        self.body = body
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.lines = lines
        self.failures: list[str] = []

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def json(self) -> Any:
        if isinstance(self.body, str):
            raise ValueError("not JSON")
        return self.body

    def iter_lines(self) -> Iterator[bytes]:
        if isinstance(self.lines, Exception):
            raise self.lines
        yield from self.lines

    def failure(self, message: str) -> None:
        self.failures.append(message)


class _Client:
    def __init__(self, responses: Sequence[_Response]) -> None:
        self.responses = list(responses)
        self.posts: list[dict[str, Any]] = []

    def post(self, path: str, **kwargs: Any) -> _Response:
        self.posts.append({"path": path, **kwargs})
        return self.responses.pop(0)


def _user(locustfile: ModuleType, *responses: _Response, turn: int = 0) -> Any:
    """A started ChatUser whose client answers `responses` in turn; an odd `turn` makes its next stream ask
    for usage. `user.fired`: the events it reported itself (a stream's `, whole` entry)."""
    user = locustfile.ChatUser()
    user.client = _Client(responses)
    user.fired = []
    fire = SimpleNamespace(fire=lambda **event: user.fired.append(event))
    user.environment = SimpleNamespace(events=SimpleNamespace(request=fire))
    user.on_start()
    user.turn = turn
    return user


def test_affinity_error(locustfile: ModuleType) -> None:
    user = _user(locustfile)
    assert user._affinity_error({}) == "no X-Inventiv-Instance header"
    assert user._affinity_error({"X-Inventiv-Instance": A}) is None  # the first answer pins the session
    assert user._affinity_error({"X-Inventiv-Instance": A}) is None
    moved_silently = user._affinity_error({"X-Inventiv-Instance": B})
    assert moved_silently == f"session {user.session_id} went from aaaaaaaa to bbbbbbbb without Session-Moved"
    # Moved by the gateway, which says so: no error, and counted.
    assert user._affinity_error({"X-Inventiv-Instance": A, "X-Inventiv-Session-Moved": "1"}) is None
    assert user._affinity_error({"X-Inventiv-Instance": B, "X-Inventiv-Session-Moved": "0"}) is not None
    assert locustfile.TOTALS["moved"] == 1
    assert sorted(locustfile.INSTANCES) == [A, B]


def test_a_whole_stream_passes_and_is_reported_once_more(locustfile: ModuleType) -> None:
    response = _Response(lines=[CONTENT, b"", CONTENT, b"", USAGE, b"", DONE, b""])
    user = _user(locustfile, response, turn=1)
    user.chat_stream()
    assert response.failures == []
    (post,) = user.client.posts
    assert post["path"] == "/v1/chat/completions" and post["name"] == "chat stream +usage"
    assert post["stream"] is True and post["catch_response"] is True
    assert post["json"]["stream_options"] == {"include_usage": True}
    assert post["headers"]["X-Inventiv-Session"] == user.session_id
    (whole,) = user.fired
    assert (whole["request_type"], whole["name"]) == ("SSE", "chat stream +usage, whole")
    assert whole["response_length"] == 2 and whole["exception"] is None and whole["response_time"] >= 0
    assert (locustfile.TOTALS["streams"], locustfile.TOTALS["chunks"], locustfile.TOTALS["usage_chunks"]) == (1, 2, 1)


@pytest.mark.parametrize(
    ("turn", "response", "expected"),
    [
        (0, {"status": 503, "body": "no ready worker"}, "HTTP 503: no ready worker"),
        (0, {"lines": ConnectionResetError("cut")}, "reading the stream: ConnectionResetError('cut')"),
        (0, {"lines": [b"data: {not json"]}, "reading the stream: JSONDecodeError("),
        (0, {"headers": {}, "lines": [CONTENT, DONE]}, "no X-Inventiv-Instance header"),
        (0, {"lines": [CONTENT]}, "the stream ended without data: [DONE]"),
        (0, {"lines": [DONE]}, "no content chunk"),
        (1, {"lines": [CONTENT, DONE]}, "stream_options.include_usage asked, usage chunk missing or empty: None"),
        (0, {"lines": [CONTENT, USAGE, DONE]}, "a usage chunk the client did not ask for: {'prompt_tokens': 1,"),
    ],
    ids=["http-error", "cut", "malformed", "no-instance", "no-done", "no-content", "usage-missing", "usage-unasked"],
)
def test_a_bad_stream_fails(locustfile: ModuleType, turn: int, response: dict[str, Any], expected: str) -> None:
    answer = _Response(**response)
    user = _user(locustfile, answer, turn=turn)
    user.chat_stream()
    (failure,) = answer.failures
    assert failure.startswith(expected), failure
    if answer.status_code != 200:
        assert user.fired == []  # locust counted the failed request itself; there was no stream to time
    else:
        (whole,) = user.fired
        assert isinstance(whole["exception"], RuntimeError) and str(whole["exception"]) == failure


def test_a_stream_from_another_instance_fails(locustfile: ModuleType) -> None:
    first = _Response(lines=[CONTENT, USAGE, DONE])
    second = _Response(headers={"X-Inventiv-Instance": B}, lines=[CONTENT, DONE])
    user = _user(locustfile, first, second, turn=1)  # turns 2 and 3: with usage, then without
    user.chat_stream()
    user.chat_stream()
    assert first.failures == []
    assert second.failures == [f"session {user.session_id} went from aaaaaaaa to bbbbbbbb without Session-Moved"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"status": 429, "body": "slow down"}, "HTTP 429: slow down"),
        ({"body": "<html>"}, "not a chat completion (ValueError('not JSON')): <html>"),
        ({"body": {"choices": []}}, "not a chat completion (IndexError("),
        ({"body": {**ANSWER, "choices": [{"message": {"content": ""}}]}}, "empty content"),
        ({"body": {**ANSWER, "usage": {"completion_tokens": 0}}}, "no completion tokens in usage"),
        ({"headers": {}, "body": ANSWER}, "no X-Inventiv-Instance header"),
    ],
    ids=["http-error", "not-json", "no-choice", "empty", "no-tokens", "no-instance"],
)
def test_a_bad_chat_fails(locustfile: ModuleType, response: dict[str, Any], expected: str) -> None:
    answer = _Response(**response)
    user = _user(locustfile, answer)
    user.chat()
    (failure,) = answer.failures
    assert failure.startswith(expected), failure


def test_a_good_chat_passes(locustfile: ModuleType) -> None:
    answer = _Response(body=ANSWER)
    user = _user(locustfile, answer)
    user.chat()
    assert answer.failures == [] and user.client.posts[0]["name"] == "chat"
    assert user.client.posts[0]["json"]["messages"][0]["content"] == f"turn 1 of {user.session_id}"


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
