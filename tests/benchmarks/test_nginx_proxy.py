from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import nginx_proxy, procfs, static_upstream
from benchmarks.loadgen import Endpoint
from benchmarks.processes import free_port

_BODY = b'{"id":"chatcmpl-1","object":"chat.completion","usage":{"total_tokens":16}}'


def _config() -> str:
    return nginx_proxy.config(Path("/run/nginx-fast"), 18002, Endpoint("127.0.0.1", 18000))


def test_one_worker_process_without_access_log_listening_on_loopback() -> None:
    config = _config()
    assert "worker_processes 1;" in config and "daemon off;" in config
    assert "access_log off;" in config
    assert "listen 127.0.0.1:18002 backlog=4096;" in config
    assert "pid /run/nginx-fast/nginx.pid;" in config
    assert "proxy_temp_path /run/nginx-fast/proxy_temp;" in config


def test_everything_goes_to_the_one_worker_over_kept_alive_http_1_1() -> None:
    config = _config()
    upstream = config[config.index("upstream worker {") : config.index("}", config.index("upstream worker {"))]
    assert "server 127.0.0.1:18000;" in upstream
    assert "keepalive 256;" in upstream
    location = config[config.index("location / {") :]
    for directive in (
        "proxy_pass http://worker;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_read_timeout 600s;",
    ):
        assert directive in location


def test_prepare_writes_the_config_in_a_prefix_folder_of_its_own(tmp_path: Path) -> None:
    argv = nginx_proxy.prepare(Path("/usr/sbin/nginx"), tmp_path / "nginx-fast", 18002, Endpoint("127.0.0.1", 18000))
    assert argv == static_upstream.argv(Path("/usr/sbin/nginx"), tmp_path / "nginx-fast")
    written = (tmp_path / "nginx-fast" / "nginx.conf").read_text()
    assert written == nginx_proxy.config(tmp_path / "nginx-fast", 18002, Endpoint("127.0.0.1", 18000))



def _get(url: str, body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as response:
        return bytes(response.read())


def _start(argv: list[str], run_dir: Path, health: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            _get(health)
            return process
        except OSError:
            assert process.poll() is None, (run_dir / "error.log").read_text()
            time.sleep(0.05)
    raise AssertionError(f"nginx not answering {health}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """(the proxy's URL, the static upstream behind it, the proxy's master pid)."""
    binary = static_upstream.find_nginx()
    if binary is None:
        pytest.skip(static_upstream.NGINX_MISSING)
    upstream_port, proxy_port = free_port(), free_port()
    upstream_dir, proxy_dir = tmp_path / "upstream", tmp_path / "proxy"
    upstream_dir.mkdir()
    (upstream_dir / "nginx.conf").write_text(static_upstream.config(upstream_dir, upstream_port, _BODY))
    upstream = f"http://127.0.0.1:{upstream_port}"
    behind = _start(static_upstream.argv(binary, upstream_dir), upstream_dir, f"{upstream}/health")
    try:
        argv = nginx_proxy.prepare(binary, proxy_dir, proxy_port, Endpoint("127.0.0.1", upstream_port))
        proxy = f"http://127.0.0.1:{proxy_port}"
        front = _start(argv, proxy_dir, f"{proxy}/health")
        try:
            yield proxy, upstream, front.pid
        finally:
            _stop(front)
    finally:
        _stop(behind)


def _accepts(stub_status: str) -> int:
    return int(stub_status.splitlines()[2].split()[0])


def test_the_proxy_passes_the_bytes_and_keeps_its_upstream_connection(proxied: tuple[str, str, int]) -> None:
    proxy, upstream, _ = proxied
    accepted = _accepts(_get(f"{upstream}/nginx_status").decode())
    for _ in range(20):
        assert _get(f"{proxy}/v1/chat/completions", b'{"model":"m"}') == _BODY
    # One connection from the proxy carried all 20 (and this read is one more of ours), not one each.
    assert _accepts(_get(f"{upstream}/nginx_status").decode()) - accepted <= 2


def test_the_charged_process_tree_is_the_master_and_its_worker(proxied: tuple[str, str, int]) -> None:
    _, _, master = proxied
    tree = procfs.process_tree(master)
    assert len(tree) == 2 and tree[0] == master
    worker_stat = Path(f"/proc/{tree[1]}/stat").read_text()
    assert procfs.parent_pid(worker_stat) == master
