"""scripts/checks/: the operators' checks run as written, and what they share behaves.

The checks themselves run against a live stack in CI (`make stack-checks`); here: every script starts,
answers --help, fails cleanly (exit 1, a FAIL line, no traceback) without a gateway, and the helpers hold.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT / "scripts" / "checks"
NAMES = ("chat-session", "load-balancing", "token-tracking", "failover", "volume-lifecycle", "run-all")


@pytest.fixture
def checklib(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(CHECKS))
    import checklib

    yield checklib


def _run(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECKS / name), *args], capture_output=True, text=True, timeout=30, env=env
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("name", NAMES)
def test_each_check_is_an_executable_script(name: str) -> None:
    path = CHECKS / name
    assert os.access(path, os.X_OK), f"{path} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env python3\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_check_answers_help(name: str) -> None:
    done = _run(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name}")
    assert "API_BASE_URL" in done.stdout and "API_KEY" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chat-session", "volume-lifecycle", "run-all"])
def test_a_check_without_a_gateway_fails_with_a_fail_line(name: str) -> None:
    env = {**os.environ, "API_BASE_URL": f"http://127.0.0.1:{_closed_port()}", "API_KEY": "ik_test"}
    done = _run(name, env=env)
    assert done.returncode == 1
    assert "\nFAIL " in done.stdout and "Connection refused" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
def test_a_check_without_a_key_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "OPENAI_API_KEY")}
    done = _run("token-tracking", env=env)
    assert done.returncode == 1
    assert "FAIL API_KEY is not set" in done.stdout


def test_base_url_accepts_what_operators_type(checklib: ModuleType) -> None:
    base_url = checklib.base_url
    assert base_url(None) == "http://127.0.0.1:8003"
    assert base_url("http://127.0.0.1:8003/") == "http://127.0.0.1:8003"
    assert base_url("https://gw.example/v1") == "https://gw.example"
    assert base_url("http://h/prefix/v1/") == "http://h/prefix"
    with pytest.raises(checklib.CheckError):
        base_url("127.0.0.1:8003")


def test_config_takes_api_key_then_openai_api_key(checklib: ModuleType) -> None:
    config = checklib.Config
    assert config.from_env({"API_KEY": "a", "OPENAI_API_KEY": "b"}).key == "a"
    assert config.from_env({"OPENAI_API_KEY": "b"}).key == "b"
    got = config.from_env({"API_KEY": "a", "MODEL": "m", "CHECK_INSTANCE_IDS": "x, y,"})
    assert (got.model, got.instance_ids) == ("m", frozenset({"x", "y"}))
    assert config.from_env({"API_KEY": "a"}).model == "demo/qwen-small"
    with pytest.raises(checklib.CheckError):
        config.from_env({})


def test_report_exit_status(checklib: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    report = checklib.Report("x", "a check")
    assert report.finish() == 1  # nothing checked is no pass
    report.check(True, "fine")
    assert report.finish() == 0
    report.check(False, "broken", "because")
    assert report.finish() == 1
    out = capsys.readouterr().out
    assert "PASS fine\n" in out and "FAIL broken: because\n" in out


def test_stream_usage_and_chunks(checklib: ModuleType) -> None:
    stream = checklib.Stream(200, {"x-inventiv-instance": "i-1"})
    stream.events = [
        {"choices": [{"delta": {"role": "assistant", "content": "a "}}]},
        {"choices": [{"delta": {"content": "b "}}]},
        {"choices": [{"delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
    ]
    assert (stream.content_chunks, stream.usage, stream.instance) == (
        2, {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, "i-1",
    )  # fmt: skip
