"""Tracing a request: its correlation id, the time it spent in each phase, and its access-log line.

The correlation id is the client's `X-Request-Id` when it is sane (1-128 characters of letters, digits
and `._:/+=-`: nothing a header, a log line or a shell could misread), else the gateway's own id. It is
returned in `X-Request-Id`, sent to the worker, stored on the usage row (`correlation_id`) and written
on the request's one access-log line (logger `gateway.access`, `INVENTIV_ACCESS_LOG`), so one id finds
a request in the client's logs, the gateway's, the worker's and the usage table.

Phases (`inventiv_gateway_phase_seconds{phase}`): auth (key lookup), model_resolution, worker_selection
(affinity included), upstream_connect (only when a new connection to the worker was opened),
first_byte (request sent to response head received: the worker's queueing and prefill, or the whole
generation of a JSON answer), total.
"""

from __future__ import annotations

import logging
import re
from typing import Any

access_log = logging.getLogger("gateway.access")

MAX_REQUEST_ID_LEN = 128
_SANE = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{MAX_REQUEST_ID_LEN}}}")

PHASES = ("auth", "model_resolution", "worker_selection", "upstream_connect", "first_byte", "total")


def client_request_id(value: str | None) -> str | None:
    """The client's X-Request-Id if it is sane enough to echo, store and log; None otherwise."""
    if value is None or not _SANE.fullmatch(value):
        return None
    return value


def log_access(fields: dict[str, Any]) -> None:
    """One line per inference request (callers check `enabled()` first: building the fields costs)."""
    access_log.info("request", extra=fields)


def enabled() -> bool:
    return access_log.isEnabledFor(logging.INFO)
