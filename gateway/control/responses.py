"""JSON responses for the control API, encoded with orjson."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web


def _default(value: Any) -> Any:
    # numeric columns (prices) arrive as Decimal; JSON has one number type.
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json", headers=headers)
