"""Keyset pagination for list endpoints: `limit` + an opaque `cursor`.

The cursor is the URL-safe base64 of the JSON list of the last row's sort key (e.g. `[created_at, id]`),
so the next page is `WHERE (created_at, id) < (...)`: stable under inserts and as fast on page 1000 as on
page 1. It is opaque to clients; a cursor that does not decode to the endpoint's key is a 400.

`fetch_page` is the read every list endpoint makes: its filters and page from the query string, one query.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway import state
from gateway.control.input_validation import FieldSpec, Kind, Spec, check_query, text_value
from gateway.error_codes import ErrorCode
from gateway.errors import bad_request
from sql.queries import fetch_all

DEFAULT_LIMIT = 50
# One page of 500 rows stays well under a megabyte of JSON and one short query.
MAX_LIMIT = 500

PAGE_PARAMS = {
    "limit": FieldSpec("int", minimum=1, maximum=MAX_LIMIT, description=f"page size, default {DEFAULT_LIMIT}"),
    # URL-safe base64 without padding, as encode_cursor writes it.
    "cursor": FieldSpec("str", max_length=1000, pattern=r"[A-Za-z0-9_-]+",
                        description="next_cursor of the previous page"),
}


class Keyset:
    """The columns a list is sorted and paged on, each with the kind its cursor value is checked as.

    The query takes `after_<column>` for each (see `Page.key_params`) and returns the columns in its rows.
    """

    __slots__ = ("kinds", "names")

    def __init__(self, *columns: tuple[str, Kind]) -> None:
        if not columns:
            raise ValueError("a keyset needs at least one column")
        self.names = tuple(name for name, _ in columns)
        self.kinds = tuple(kind for _, kind in columns)

    def of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's sort key: what the next page's cursor holds."""
        return tuple(row[name] for name in self.names)


# A named list query: called with a connection and keyword parameters, it yields rows.
ListQuery = Callable[..., AsyncIterator[dict[str, Any]]]

# Rows listed newest first; the id breaks ties between rows created in the same microsecond.
BY_CREATED_AT = Keyset(("created_at", "datetime"), ("id", "uuid"))


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    # The sort key of the last row already seen; None for the first page.
    after: tuple[Any, ...] | None

    def key_params(self, *names: str) -> dict[str, Any]:
        """SQL parameters `after_<name>` for the keyset condition, all None on the first page."""
        values = self.after or (None,) * len(names)
        return {f"after_{name}": value for name, value in zip(names, values, strict=True)}


def page_from(params: dict[str, Any], key_kinds: Sequence[Kind]) -> Page:
    cursor = params.get("cursor")
    after = decode_cursor(cursor, key_kinds) if cursor is not None else None
    return Page(limit=params.get("limit", DEFAULT_LIMIT), after=after)


def encode_cursor(values: Sequence[Any]) -> str:
    text = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(text)).decode().rstrip("=")


def decode_cursor(cursor: str, key_kinds: Sequence[Kind]) -> tuple[Any, ...]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != len(key_kinds) or not all(isinstance(v, str) for v in values):
        raise bad_request("'cursor' is not a cursor this list returned.", "cursor", ErrorCode.INVALID_CURSOR)
    return tuple(
        text_value("cursor", value, FieldSpec(kind, max_length=1000))
        for value, kind in zip(values, key_kinds, strict=True)
    )


def page_body(
    rows: list[dict[str, Any]],
    page: Page,
    sort_key: Callable[[dict[str, Any]], Sequence[Any]],
    render: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The list envelope. `rows` were fetched with `LIMIT page.limit + 1`: an extra row means more."""
    has_more = len(rows) > page.limit
    shown = rows[: page.limit]
    next_cursor = encode_cursor(sort_key(shown[-1])) if has_more else None
    return {"object": "list", "data": [render(r) for r in shown], "has_more": has_more, "next_cursor": next_cursor}


async def fetch_page(
    request: web.Request,
    spec: Spec,
    keyset: Keyset,
    query: ListQuery,
    **fixed: Any,
) -> tuple[list[dict[str, Any]], Page]:
    """One page of rows for a list endpoint, with one row more than the page when there is more.

    The query string is checked against `spec`; `query` gets every filter `spec` declares (None when not
    sent, which the SQL reads as "any"), the `fixed` parameters (the caller's organization), the limit and
    the keyset's `after_*` parameters.
    """
    params = check_query(request.query, spec)
    page = page_from(params, keyset.kinds)
    filters = {name: params.get(name) for name in spec if name not in PAGE_PARAMS}
    async with request.app[state.DB].acquire() as conn:
        rows = await fetch_all(
            query(conn, **fixed, **filters, limit=page.limit + 1, **page.key_params(*keyset.names))
        )
    return rows, page
