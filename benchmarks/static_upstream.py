"""The static upstream of (a-static): nginx answering `return 200` with the fast mock worker's own bytes.

Behind it a proxy's cost is its own: the mock worker, which in (a) shares CPU 0 with the load driver
and caps every proxy near `direct`, is out of the way. As the peer harness (bench-peers) runs it: one
nginx worker process on CPU 0, access log off, keep-alive without limit; the requests it served are
read from its stub_status counter. nginx is a Debian package (`make bench-deps` installs it); without
it the benchmark skips (a-static) and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

NGINX_MISSING = "nginx is not installed: `apt-get install nginx` (or `make bench-deps`)"
CHAT = "/v1/chat/completions"
STUB_STATUS = "/nginx_status"
# A run reads the counter before and after its load; the second read counts itself.
OWN_READS_PER_RUN = 1
# The model the gateway routes to nginx: a catalog entry of its own, so no mock worker shares it.
MODEL = "inventiv-bench/static-upstream"


def find_nginx() -> Path | None:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    return Path(found) if found else None


def quoted(body: bytes) -> str:
    """`body` as an nginx single-quoted string. nginx expands `$name` inside it and has no escape for
    `$`, so a body holding one is refused rather than served changed."""
    text = body.decode()
    if "$" in text:
        raise ValueError("nginx cannot return a body holding `$` verbatim")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def http_head(run_dir: Path) -> str:
    """The start of an nginx.conf, up to inside its `http` block, for one worker process in the
    foreground whose files all stay under `run_dir`; the static upstream and the nginx peer
    (benchmarks/nginx_proxy.py) both start so."""
    return f"""worker_processes 1;
daemon off;
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {run_dir}/client_body;
  proxy_temp_path {run_dir}/proxy_temp;
  fastcgi_temp_path {run_dir}/fastcgi_temp;
  uwsgi_temp_path {run_dir}/uwsgi_temp;
  scgi_temp_path {run_dir}/scgi_temp;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
"""


def config(run_dir: Path, port: int, body: bytes) -> str:
    """nginx.conf for one worker process answering `body` to every chat completion."""
    return http_head(run_dir) + f"""  default_type application/json;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {CHAT} {{ return 200 {quoted(body)}; }}
    location = /health {{ return 200 ''; }}
    location = {STUB_STATUS} {{ stub_status; }}
    location / {{ return 404 '{{"error":"not found"}}'; }}
  }}
}}
"""


def argv(nginx: Path, run_dir: Path) -> list[str]:
    # -e: the error log from the first line on, before the config names it (else /var/log/nginx).
    return [str(nginx), "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", str(run_dir / "error.log")]


def requests_served(stub_status: str) -> int:
    """The `requests` counter of a stub_status page (its third line: accepts, handled, requests),
    this read of the page included."""
    lines = stub_status.splitlines()
    if len(lines) < 3 or len(lines[2].split()) != 3:
        raise ValueError(f"not a stub_status page: {stub_status[:200]!r}")
    return int(lines[2].split()[2])
