"""scripts/checks/: the operators' checks run as written, and what they share behaves.

The checks themselves run against a live stack in CI (`make stack-checks`); here: every script starts,
answers --help, fails cleanly (exit 1, a FAIL line, no traceback) without a gateway, and the helpers hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from providers.mock.processes import free_port

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
    env = {**os.environ, "API_BASE_URL": f"http://127.0.0.1:{free_port(())}", "API_KEY": "ik_test"}
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


def test_a_crash_in_a_check_is_its_last_fail_line(
    checklib: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("API_KEY", "ik_test")

    def body(report: Any, api: Any) -> None:
        report.ok("a first assertion")
        _ = {"status": "ready"}["id"]  # an answer of an unexpected shape

    assert checklib.run_check("x", "a check", body) == 1
    out = capsys.readouterr().out
    *_, fail, verdict = out.splitlines()
    assert fail == "FAIL KeyError: 'id'"
    assert verdict.startswith("== x: FAIL (1 passed, 1 failed")
    assert "Traceback" in out and "in body" in out  # where it crashed


class _FakeGateway:
    """The part of checklib.Api the deploy and teardown helpers use, over a mock cloud where a deployed
    instance is ready and a terminated one gone at the next look; chat answers go round the instances."""

    def __init__(self, checklib: ModuleType) -> None:
        self.lib = checklib
        self.config = checklib.Config("http://gateway.test", "ik_test", "demo/qwen-small")
        self.status: dict[str, str] = {}
        self.deleted: list[str] = []
        self.answers = 0

    def list_all(self, path: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return {
            "/models": [{"id": "m-1", "hf_repo_id": "Qwen/Qwen2.5-0.5B-Instruct"}],
            "/offerings": [{"name": "demo/qwen-small", "model_id": "m-1"}],
            "/instance_types": [{"id": "t-1", "code": "MOCK-GPU-S"}],
            "/zones": [{"id": "z-1"}],
        }[path]

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        if method == "POST":
            assert path == "/deployments" and body == {"instance_type_id": "t-1", "zone_id": "z-1", "model_id": "m-1"}
            instance_id = f"i-{len(self.status)}"
            self.status[instance_id] = "provisioning"
            return self.lib.Response(202, {}, json.dumps({"id": instance_id, "status": "provisioning"}).encode())
        instance_id = path.rsplit("/", 1)[1]
        if instance_id == "i-refused":
            return self.lib.Response(500, {}, b"cloud down")
        self.deleted.append(instance_id)
        self.status[instance_id] = "terminating"
        return self.lib.Response(202, {}, b'{"status": "terminating"}')

    def get_json(self, path: str, query: dict[str, Any] | None = None) -> Any:
        instance_id = path.rsplit("/", 1)[1]
        if instance_id == "i-odd":
            return {"id": instance_id}  # no status: a crash of the helper, not of the teardown
        after = {"provisioning": "ready", "terminating": "terminated"}
        self.status[instance_id] = after.get(self.status[instance_id], self.status[instance_id])
        return {"id": instance_id, "status": self.status[instance_id]}

    def chat(self, content: str, **_: Any) -> Any:
        ids = sorted(self.status)
        self.answers += 1
        return self.lib.Response(200, {"x-inventiv-instance": ids[self.answers % len(ids)]}, b"{}")


def test_deploy_pair_deploys_two_and_waits_for_both_to_answer(
    checklib: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = _FakeGateway(checklib)
    created: list[str] = []
    assert checklib.deploy_pair(gateway, created) is created
    assert created == ["i-0", "i-1"] and gateway.status == {"i-0": "ready", "i-1": "ready"}
    assert gateway.answers >= 2
    out = capsys.readouterr().out
    assert "PASS instances i-0, i-1 ready after" in out and "PASS both instances answer through the gateway" in out


def test_teardown_goes_on_past_a_failure(checklib: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    gateway = _FakeGateway(checklib)
    gateway.status = {"i-0": "ready", "i-refused": "ready", "i-odd": "ready", "i-1": "ready"}
    failures = checklib.teardown(gateway, ["i-0", "i-refused", "i-odd", "i-1"], timeout_s=5)
    assert failures == ["DELETE /instances/i-refused: HTTP 500: cloud down", "KeyError: 'status'"]
    assert gateway.deleted == ["i-0", "i-odd", "i-1"]
    assert gateway.status["i-0"] == gateway.status["i-1"] == "terminated"
    out = capsys.readouterr().out
    assert "PASS i-0 terminated" in out and "PASS i-1 terminated" in out and "FAIL KeyError: 'status'" in out
    assert checklib.teardown(gateway, []) == []
