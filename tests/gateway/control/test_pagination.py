"""Cursors round-trip the sort key; anything else given as a cursor is a 400. A keyset names the key.

`fetch_page` itself is exercised by every list endpoint's tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from gateway.control.pagination import (
    BY_CREATED_AT,
    PAGE_PARAMS,
    Keyset,
    Page,
    decode_cursor,
    encode_cursor,
    page_body,
    page_from,
)
from gateway.errors import ApiError

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
WHEN = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_cursor_round_trips_the_key() -> None:
    assert decode_cursor(encode_cursor([WHEN, UUID]), ("datetime", "uuid")) == (WHEN, UUID)
    assert decode_cursor(encode_cursor(["fr-par-1"]), ("str",)) == ("fr-par-1",)


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", encode_cursor([WHEN]), encode_cursor([WHEN, "nope"]), encode_cursor(["x", UUID]),
     "eyJhIjoxfQ", encode_cursor([1, 2])],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_cursor(cursor, ("datetime", "uuid"))
    assert (caught.value.status, caught.value.param) == (400, "cursor")


def test_cursors_match_the_documented_pattern() -> None:
    pattern = PAGE_PARAMS["cursor"].pattern
    assert pattern is not None
    for values in ([WHEN, UUID], ["fr-par-1"], ["\u00e9\u00e8?>>"]):
        assert re.fullmatch(pattern, encode_cursor(values))


def test_page_defaults_and_key_params() -> None:
    page = page_from({}, ("datetime", "uuid"))
    assert page == Page(limit=50, after=None)
    assert page.key_params("created_at", "id") == {"after_created_at": None, "after_id": None}
    page = page_from({"limit": 2, "cursor": encode_cursor([WHEN, UUID])}, ("datetime", "uuid"))
    assert page.key_params("created_at", "id") == {"after_created_at": WHEN, "after_id": UUID}


@pytest.mark.parametrize(("fetched", "has_more"), [(0, False), (2, False), (3, True)])
def test_page_body_trims_the_look_ahead_row(fetched: int, has_more: bool) -> None:
    rows = [{"k": f"k{i}"} for i in range(fetched)]
    body = page_body(rows, Page(limit=2, after=None), lambda r: (r["k"],), lambda r: {"key": r["k"]})
    assert body["object"] == "list"
    assert body["has_more"] is has_more
    assert len(body["data"]) == min(fetched, 2)
    assert (body["next_cursor"] is not None) is has_more
    if has_more:
        assert decode_cursor(body["next_cursor"], ("str",)) == ("k1",)


@pytest.mark.parametrize(
    ("keyset", "row", "key"),
    [
        (BY_CREATED_AT, {"id": UUID, "created_at": WHEN, "name": "x"}, (WHEN, UUID)),
        (Keyset(("provider_code", "str"), ("code", "str")), {"code": "L4-1", "provider_code": "scw"}, ("scw", "L4-1")),
        (Keyset(("hf_repo_id", "str")), {"hf_repo_id": "Qwen/Qwen2.5-7B-Instruct"}, ("Qwen/Qwen2.5-7B-Instruct",)),
    ],
)
def test_keyset_reads_the_sort_key_in_its_column_order(
    keyset: Keyset, row: dict[str, object], key: tuple[object, ...]
) -> None:
    assert keyset.of(row) == key
    assert decode_cursor(encode_cursor(keyset.of(row)), keyset.kinds) == key


def test_keyset_names_the_after_parameters() -> None:
    page = page_from({"cursor": encode_cursor([WHEN, UUID])}, BY_CREATED_AT.kinds)
    assert page.key_params(*BY_CREATED_AT.names) == {"after_created_at": WHEN, "after_id": UUID}


def test_a_keyset_without_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one column"):
        Keyset()
