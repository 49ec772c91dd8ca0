"""benchmarks/ab/: the ApacheBench script parses, answers -h, refuses bad options; its bodies are valid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

AB_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "ab"
SCRIPT = AB_DIR / "run-ab"


def test_script_is_executable_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    subprocess.run(["shellcheck", str(SCRIPT)], check=True, timeout=60)


@pytest.mark.slow
def test_help_and_bad_options() -> None:
    done = subprocess.run([str(SCRIPT), "-h"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("usage: run-ab")
    for bad in (["-n", "x"], ["-c", "0"], ["extra"], ["-q"]):
        done = subprocess.run([str(SCRIPT), *bad], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)


@pytest.mark.slow
def test_without_a_key_it_fails_before_running_ab() -> None:
    # Without ab it fails too, saying how to install it: either way, exit 1 and a FAIL line.
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "OPENAI_API_KEY")}
    done = subprocess.run([str(SCRIPT), "-n", "1"], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1 and "FAIL" in done.stderr


@pytest.mark.parametrize("name", ["chat.json", "completions.json"])
def test_bodies(name: str) -> None:
    body = json.loads((AB_DIR / name).read_text())
    assert body["model"] == "demo/qwen-small"
    assert ("messages" in body) == (name == "chat.json")
    assert isinstance(body["max_tokens"], int) and not body.get("stream")
