"""nginx as a peer: a plain reverse proxy in front of one worker, the floor of what a proxy costs.

Configured as the peer harness (bench-peers) runs it: one worker process, access log off, HTTP/1.1
to the upstream over a pool of up to 256 idle keep-alive connections (`Connection ""` so nginx does
not close them), responses passed on as they arrive (`proxy_buffering off`, for streams) and a read
timeout long enough for any stream. Like a router, one nginx runs per worker, on CPU 1; its master
and its worker process are one process tree, charged together (benchmarks/procfs).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.loadgen import Endpoint
from benchmarks.static_upstream import argv, http_head

# Idle upstream connections kept per worker process: more than the benchmark's widest load (200
# concurrent streams in (d)), so nginx never opens a connection per request once warm.
UPSTREAM_KEEPALIVE = 256


def config(run_dir: Path, port: int, upstream: Endpoint) -> str:
    """nginx.conf for one worker process proxying everything on `port` to `upstream`."""
    return http_head(run_dir) + f"""  upstream worker {{
    server {upstream.host}:{upstream.port};
    keepalive {UPSTREAM_KEEPALIVE};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://worker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }}
  }}
}}
"""


def prepare(nginx: Path, nginx_dir: Path, port: int, upstream: Endpoint) -> list[str]:
    """A prefix folder of its own with the config in it; the command that runs nginx from there."""
    nginx_dir.mkdir()
    (nginx_dir / "nginx.conf").write_text(config(nginx_dir, port, upstream))
    return argv(nginx, nginx_dir)
