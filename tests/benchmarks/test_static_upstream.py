from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import static_upstream
from benchmarks.processes import free_port

# Quotes and a backslash, as a JSON answer may hold: nginx must give them back unchanged.
_BODY = b'{"id":"chatcmpl-1","content":"it\'s \\"quoted\\" \\\\ here","usage":{"total_tokens":16}}'
_STUB_STATUS = "Active connections: 1 \nserver accepts handled requests\n 7 7 42 \nReading: 0 Writing: 1 Waiting: 0 \n"


def test_the_body_is_returned_as_a_single_quoted_string() -> None:
    config = static_upstream.config(Path("/run/x"), 18001, b'{"a":"it\'s \\\\"}')
    assert "location = /v1/chat/completions { return 200 '{\"a\":\"it\\'s \\\\\\\\\"}'; }" in config
    assert "listen 127.0.0.1:18001 backlog=4096;" in config
    assert "location = /nginx_status { stub_status; }" in config
    assert "access_log off;" in config and "worker_processes 1;" in config


def test_a_body_nginx_would_expand_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\$"):
        static_upstream.config(Path("/run/x"), 18001, b'{"price":"$5"}')


def test_requests_served_is_the_third_number_of_the_third_line() -> None:
    assert static_upstream.requests_served(_STUB_STATUS) == 42
    with pytest.raises(ValueError, match="not a stub_status page"):
        static_upstream.requests_served("<html>404</html>")



def _get(url: str, body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as response:
        return bytes(response.read())


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[str]:
    binary = static_upstream.find_nginx()
    if binary is None:
        pytest.skip(static_upstream.NGINX_MISSING)
    port = free_port()
    (tmp_path / "nginx.conf").write_text(static_upstream.config(tmp_path, port, _BODY))
    process = subprocess.Popen(static_upstream.argv(binary, tmp_path), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _get(f"{base}/health")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "error.log").read_text()
                time.sleep(0.05)
        yield base
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_nginx_answers_the_same_bytes_and_counts_what_it_served(nginx: str) -> None:
    before = static_upstream.requests_served(_get(f"{nginx}/nginx_status").decode())
    for _ in range(5):
        assert _get(f"{nginx}/v1/chat/completions", b'{"model":"m"}') == _BODY
    after = static_upstream.requests_served(_get(f"{nginx}/nginx_status").decode())
    assert after - before - static_upstream.OWN_READS_PER_RUN == 5
