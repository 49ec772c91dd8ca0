"""Bodies, query strings and ids against their specs: every refusal is a 400 that names the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from multidict import MultiDict

from gateway.control.input_validation import (
    TEXT_PATTERN,
    FieldSpec,
    body_schema,
    check_body,
    check_query,
    parse_json_object,
    parse_uuid,
    query_parameters,
)
from gateway.errors import ApiError

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
SPEC = {
    "id": FieldSpec("uuid", required=True),
    "size": FieldSpec("int", nullable=True, minimum=0, maximum=100),
    "name": FieldSpec("str", max_length=5),
    "on": FieldSpec("bool"),
    "tags": FieldSpec("str_list", choices=("a", "b")),
    "grants": FieldSpec("uuid_list"),
    "code": FieldSpec("str", pattern=r"[a-z]+"),
    "at": FieldSpec("datetime"),
}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "id", "missing_field"),
        ({"id": UUID, "extra": 1}, "extra", "unknown_field"),
        ({"id": "not-a-uuid"}, "id", "invalid_uuid"),
        ({"id": 5}, "id", "invalid_uuid"),
        ({"id": None}, "id", "invalid_request"),
        ({"id": UUID, "size": -1}, "size", "invalid_request"),
        ({"id": UUID, "size": 101}, "size", "invalid_request"),
        ({"id": UUID, "size": "5"}, "size", "invalid_request"),
        ({"id": UUID, "size": True}, "size", "invalid_request"),
        ({"id": UUID, "size": 1.5}, "size", "invalid_request"),
        ({"id": UUID, "name": "toolong"}, "name", "invalid_request"),
        ({"id": UUID, "name": "  "}, "name", "invalid_request"),
        ({"id": UUID, "name": "a\x00b"}, "name", "invalid_request"),
        ({"id": UUID, "name": 3}, "name", "invalid_request"),
        ({"id": UUID, "on": "yes"}, "on", "invalid_request"),
        ({"id": UUID, "tags": []}, "tags", "invalid_request"),
        ({"id": UUID, "tags": ["c"]}, "tags", "invalid_request"),
        ({"id": UUID, "tags": "a"}, "tags", "invalid_request"),
        ({"id": UUID, "grants": ["x"]}, "grants", "invalid_uuid"),
        ({"id": UUID, "code": "ABC"}, "code", "invalid_request"),
        ({"id": UUID, "at": "yesterday"}, "at", "invalid_request"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_body(body, SPEC)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)


def test_good_body_is_converted() -> None:
    body = {"id": UUID.upper(), "size": None, "name": "abc", "on": False, "tags": ["b", "a", "b"],
            "grants": [UUID, UUID], "code": "ok", "at": "2026-01-02"}
    assert check_body(body, SPEC) == {
        "id": UUID, "size": None, "name": "abc", "on": False, "tags": ["b", "a"], "grants": [UUID], "code": "ok",
        "at": datetime(2026, 1, 2, tzinfo=UTC),
    }


def test_absent_optional_fields_stay_absent() -> None:
    assert check_body({"id": UUID}, SPEC) == {"id": UUID}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ([("nope", "1")], "nope"),
        ([("id", UUID), ("id", UUID)], "id"),
        ([("id", "zzz")], "id"),
        ([("id", UUID), ("size", "-3")], "size"),
        ([("id", UUID), ("size", "ten")], "size"),
        ([("id", UUID), ("size", "99999999999999999999999")], "size"),
        ([("id", UUID), ("on", "maybe")], "on"),
        ([("id", UUID), ("at", "2026-13-01")], "at"),
        ([("size", "1")], "id"),
    ],
)
def test_bad_query_strings_name_the_parameter(query: list[tuple[str, str]], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_query(MultiDict(query), SPEC)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_query_values_are_converted() -> None:
    query = MultiDict([("id", UUID), ("size", "7"), ("on", "true"), ("tags", "a, b"),
                       ("at", "2026-01-02T03:04:05+02:00")])
    assert check_query(query, SPEC) == {
        "id": UUID, "size": 7, "on": True, "tags": ["a", "b"],
        "at": datetime.fromisoformat("2026-01-02T03:04:05+02:00"),
    }


@pytest.mark.parametrize(
    "raw",
    [
        # Offsets Python parses and Postgres refuses ("time zone displacement out of range").
        "0323-09-25T16:42:42+23:34", "2026-01-02T03:04:05-15:00", "2026-01-02T03:04:05+14:01",
        # Valid here, but outside Python's years once in UTC.
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    ],
)
def test_datetimes_out_of_range_name_the_parameter(raw: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_query(MultiDict([("at", raw)]), {"at": SPEC["at"]})
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "at", "invalid_datetime")


@pytest.mark.parametrize(
    ("raw", "utc"),
    [
        ("0323-09-25T16:42:42+14:00", datetime(323, 9, 25, 2, 42, 42, tzinfo=UTC)),
        ("2026-01-02T03:04:05-12:00", datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC)),
        ("0001-01-01", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59+00:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_datetimes_come_back_in_utc(raw: str, utc: datetime) -> None:
    parsed = check_query(MultiDict([("at", raw)]), {"at": SPEC["at"]})["at"]
    assert parsed == utc and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"[1]", b'"x"', b"null", b"\xff"])
def test_a_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json_object(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_uuids_are_normalised() -> None:
    assert parse_uuid(UUID.upper(), "id") == UUID
    with pytest.raises(ApiError):
        parse_uuid("6f1c1d2e", "id")


def test_body_schema_mirrors_the_spec() -> None:
    schema = body_schema(SPEC)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["id"]
    assert schema["properties"]["size"] == {"type": ["integer", "null"], "minimum": 0, "maximum": 100}
    assert schema["properties"]["tags"]["items"]["enum"] == ["a", "b"]
    assert schema["properties"]["code"]["pattern"] == "^[a-z]+$"
    assert schema["properties"]["name"] | {"minLength": 1, "pattern": TEXT_PATTERN} == schema["properties"]["name"]
    assert body_schema(SPEC, non_empty=True)["minProperties"] == 1


def test_integral_numbers_are_integers() -> None:
    assert check_body({"id": UUID, "size": 5.0}, SPEC)["size"] == 5


def _accepted(body: dict[str, Any]) -> bool:
    try:
        check_body(body, SPEC)
    except ApiError:
        return False
    return True


# Text with the characters validation and the schema's pattern could read differently: blanks of both
# Python's str.isspace() and ECMA-262's \s, NUL, other control characters.
_TEXT = st.text(st.sampled_from(" \t\n\v\f\r\x00\x1c\x85\xa0\u2028\u3000\ufeffa-"), max_size=8)
_NUMBER = st.one_of(st.integers(-5, 105), st.floats(-5, 105, allow_nan=False), st.booleans())


@given(name=_TEXT, size=_NUMBER)
def test_the_schema_accepts_what_validation_accepts(name: str, size: float) -> None:
    body = {"id": UUID, "name": name, "size": size}
    assert Draft202012Validator(body_schema(SPEC)).is_valid(body) == _accepted(body), body


@pytest.mark.parametrize("text", [
    "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456789+02:00", "2026-01-02t03:04:05z", "2026-01-02T23:59:60Z",
    "0000-01-02T03:04:05Z", "0001-01-01T00:00:00-12:00", "2026-02-30T00:00:00Z", "2026-01-02 03:04:05Z",
    "2026-01-02", "2026-01-02T03:04Z",
])
def test_the_schema_accepts_the_date_times_validation_accepts(text: str) -> None:
    schema = {"type": "object", "properties": {"at": query_parameters({"at": SPEC["at"]})[0]["schema"]}}
    valid = Draft202012Validator(schema, format_checker=FormatChecker()).is_valid({"at": text})
    try:
        check_query(MultiDict([("id", UUID), ("at", text)]), SPEC)
    except ApiError:
        assert not valid, text
