"""Input checking for the control API: JSON bodies, query strings and path ids, each against a spec.

Every field a route accepts is declared once as a `FieldSpec`; the same specs produce the OpenAPI
schemas, so the document cannot drift from what is enforced. Anything not declared is refused with a
400 that names it, and every conversion error names its field: bad input never reaches SQL (where it
would surface as a 500).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import MultiMapping

from gateway import state
from gateway.blank_text import TEXT_PATTERN, is_blank
from gateway.connections import read_body
from gateway.error_codes import ErrorCode
from gateway.errors import bad_request

Kind = Literal["str", "uuid", "int", "bool", "str_list", "uuid_list", "datetime"]

# Postgres `integer` columns hold at most this; larger values would fail in SQL instead of here.
INT4_MAX = 2**31 - 1
# Real UTC offsets run from -12:00 to +14:00. Python parses any offset under 24 h, but Postgres refuses
# a displacement beyond 15:59 ("time zone displacement out of range"), which surfaced as a 500.
MAX_UTC_OFFSET = timedelta(hours=14)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    kind: Kind
    required: bool = False
    nullable: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    # Names, codes and labels are short; a bound keeps junk out of the catalog and the logs.
    max_length: int = 200
    pattern: str | None = None
    description: str = ""


Spec = Mapping[str, FieldSpec]


async def read_json_object(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, request.app[state.SETTINGS].body_timeout_s))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise bad_request("The request body must be a JSON object.", code=ErrorCode.INVALID_JSON)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Malformed JSON body: {exc}.", code=ErrorCode.INVALID_JSON) from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code=ErrorCode.INVALID_JSON)
    return data


def patch_params(body: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    """The parameters of a PATCH query: `set_<field>` and the value for every field of `spec`, so that a
    field sent as null (unlimited, cleared) differs from one not sent (unchanged)."""
    params: dict[str, Any] = {}
    for name in spec:
        params[f"set_{name}"] = name in body
        params[name] = body.get(name)
    return params


def check_body(data: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    """The declared fields present in `data`, converted; 400 for unknown, missing or bad ones."""
    _refuse_unknown(data, spec)
    out: dict[str, Any] = {}
    for name, field in spec.items():
        if name not in data:
            if field.required:
                raise bad_request(f"Missing required field '{name}'.", name, ErrorCode.MISSING_FIELD)
            continue
        out[name] = _json_value(name, data[name], field)
    return out


def check_query(query: MultiMapping[str], spec: Spec) -> dict[str, Any]:
    """The declared query parameters present, converted; 400 for unknown, repeated or bad ones."""
    _refuse_unknown(query, spec)
    out: dict[str, Any] = {}
    for name, field in spec.items():
        values = query.getall(name, [])
        if len(values) > 1:
            raise bad_request(f"Query parameter '{name}' is given more than once.", name)
        if not values:
            if field.required:
                raise bad_request(f"Missing required query parameter '{name}'.", name, ErrorCode.MISSING_FIELD)
            continue
        out[name] = text_value(name, values[0], field)
    return out


def parse_uuid(value: str, param: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise bad_request(f"'{param}' must be a UUID.", param, ErrorCode.INVALID_UUID) from None


def path_uuid(request: web.Request, name: str = "id") -> str:
    return parse_uuid(request.match_info[name], name)


def _refuse_unknown(given: Mapping[str, Any] | MultiMapping[str], spec: Spec) -> None:
    for name in given:
        if name not in spec:
            allowed = ", ".join(spec) or "none"
            raise bad_request(f"Unknown field '{name}' (allowed: {allowed}).", name, ErrorCode.UNKNOWN_FIELD)


# JSON values -------------------------------------------------------------------------------------


def _json_value(name: str, value: Any, field: FieldSpec) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise bad_request(f"'{name}' must not be null.", name)
    return _JSON_CHECKS[field.kind](name, value, field)


def _json_str(name: str, value: Any, field: FieldSpec) -> str:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string.", name)
    return _checked_text(name, value, field)


def _json_uuid(name: str, value: Any, field: FieldSpec) -> str:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a UUID string.", name, ErrorCode.INVALID_UUID)
    return parse_uuid(value, name)


def _json_int(name: str, value: Any, field: FieldSpec) -> int:
    # JSON Schema's integer is any number with a zero fractional part, so the document allows `40.0`
    # (https://json-schema.org/draft/2020-12/json-schema-core#section-4.2.1, and the official test suite's
    # zeroTerminatedFloats.json). Not `true`, an int in Python.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer.", name)
    return _checked_int(name, value, field)


def _json_bool(name: str, value: Any, field: FieldSpec) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false.", name)
    return value


def _json_str_list(name: str, value: Any, field: FieldSpec) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"'{name}' must be a list of strings.", name)
    if not value:
        raise bad_request(f"'{name}' must not be empty.", name)
    out: list[str] = []
    for item in value:
        checked = _checked_text(name, item, field)
        if checked not in out:
            out.append(checked)
    return out


def _json_uuid_list(name: str, value: Any, field: FieldSpec) -> list[str]:
    # May be empty: an empty set is a meaningful value (e.g. no grants).
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"'{name}' must be a list of UUID strings.", name, ErrorCode.INVALID_UUID)
    return list(dict.fromkeys(parse_uuid(v, name) for v in value))


def _json_datetime(name: str, value: Any, field: FieldSpec) -> datetime:
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be an ISO 8601 date or date-time string.", name)
    return _text_datetime(name, value, field)


_JSON_CHECKS: dict[Kind, Callable[[str, Any, FieldSpec], Any]] = {
    "str": _json_str,
    "uuid": _json_uuid,
    "int": _json_int,
    "bool": _json_bool,
    "str_list": _json_str_list,
    "uuid_list": _json_uuid_list,
    "datetime": _json_datetime,
}


# Query-string values -----------------------------------------------------------------------------


def text_value(name: str, raw: str, field: FieldSpec) -> Any:
    """A query-string value converted to the field's kind."""
    return _TEXT_CHECKS[field.kind](name, raw, field)


def _text_int(name: str, raw: str, field: FieldSpec) -> int:
    if not re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
        raise bad_request(f"'{name}' must be an integer.", name)
    return _checked_int(name, int(raw), field)


def _text_bool(name: str, raw: str, field: FieldSpec) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(f"'{name}' must be true or false.", name)


def _text_datetime(name: str, raw: str, field: FieldSpec) -> datetime:
    text = raw.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"'{name}' must be an ISO 8601 date or date-time.", name) from None
    # A bare date means its midnight; a time without an offset is UTC.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    offset = parsed.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise bad_request(f"'{name}' has a UTC offset beyond -14:00 to +14:00.", name, ErrorCode.INVALID_DATETIME)
    try:
        # In UTC from here on: SQL and JSON never see the client's offset.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise bad_request(
            f"'{name}' is outside years 1 to 9999 once in UTC.", name, ErrorCode.INVALID_DATETIME
        ) from None


def _text_str(name: str, raw: str, field: FieldSpec) -> str:
    return _checked_text(name, raw, field)


def _text_uuid(name: str, raw: str, field: FieldSpec) -> str:
    return parse_uuid(raw, name)


def _text_str_list(name: str, raw: str, field: FieldSpec) -> list[str]:
    return _json_str_list(name, [part.strip() for part in raw.split(",") if part.strip()], field)


def _text_uuid_list(name: str, raw: str, field: FieldSpec) -> list[str]:
    return _json_uuid_list(name, [part.strip() for part in raw.split(",") if part.strip()], field)


_TEXT_CHECKS: dict[Kind, Callable[[str, str, FieldSpec], Any]] = {
    "str": _text_str,
    "uuid": _text_uuid,
    "int": _text_int,
    "bool": _text_bool,
    "str_list": _text_str_list,
    "uuid_list": _text_uuid_list,
    "datetime": _text_datetime,
}


# Shared bounds ---------------------------------------------------------------------------------

def _checked_int(name: str, value: int, field: FieldSpec) -> int:
    if field.minimum is not None and value < field.minimum:
        raise bad_request(f"'{name}' must be at least {field.minimum}.", name)
    if field.maximum is not None and value > field.maximum:
        raise bad_request(f"'{name}' must be at most {field.maximum}.", name)
    return value


def _checked_text(name: str, value: str, field: FieldSpec) -> str:
    if "\x00" in value:
        # Postgres text cannot hold NUL; refusing it here keeps it from becoming a 500.
        raise bad_request(f"'{name}' must not contain NUL characters.", name)
    if is_blank(value):
        raise bad_request(f"'{name}' must not be empty.", name)
    if len(value) > field.max_length:
        raise bad_request(f"'{name}' must be at most {field.max_length} characters.", name)
    if field.choices is not None and value not in field.choices:
        raise bad_request(f"'{name}' must be one of: {', '.join(field.choices)}.", name)
    if field.pattern is not None and not re.fullmatch(field.pattern, value):
        raise bad_request(f"'{name}' must match {field.pattern}.", name)
    return value


# OpenAPI ---------------------------------------------------------------------------------------

_SCHEMAS: dict[Kind, dict[str, Any]] = {
    "str": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
}


def field_schema(field: FieldSpec) -> dict[str, Any]:
    if field.kind == "str_list":
        schema = {"type": "array", "items": _scalar_schema("str", field), "minItems": 1}
    elif field.kind == "uuid_list":
        schema = {"type": "array", "items": _scalar_schema("uuid", field)}
    else:
        schema = _scalar_schema(field.kind, field)
    if field.nullable:
        schema["type"] = [schema["type"], "null"]
    if field.description:
        schema["description"] = field.description
    return schema


# RFC 3339 date-times as Python's datetime.fromisoformat reads them: it refuses the lowercase `t` and `z`
# that RFC 3339 allows (https://datatracker.ietf.org/doc/html/rfc3339#section-5.6, NOTE), and year 0000,
# and second 60. Offsets stop at +-14:00 (the widest in use; Postgres refuses past 15:59), and the first
# and last days of years 1 and 9999 take no offset that would move them out of those years in UTC. The
# schema states this pattern beside `format: date-time`, so it allows no more than `_text_datetime`.
DATETIME_PATTERN = (
    r"^(?!0000)(?!0001-01-01T.*\+)(?!9999-12-31T.*-)[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9]"
    r"(\.[0-9]+)?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)$"
)


def _scalar_schema(kind: Kind, field: FieldSpec) -> dict[str, Any]:
    schema = dict(_SCHEMAS[kind])
    if kind == "datetime":
        schema["pattern"] = DATETIME_PATTERN
    if kind == "str":
        schema["maxLength"] = field.max_length
        if field.choices is None and field.pattern is None:
            # A pattern or a list of choices of its own already rules out blank text and NUL.
            schema["minLength"] = 1
            schema["pattern"] = TEXT_PATTERN
    if field.choices is not None:
        schema["enum"] = list(field.choices)
    if field.pattern is not None:
        schema["pattern"] = f"^{field.pattern}$"
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    return schema


def body_schema(spec: Spec, *, non_empty: bool = False) -> dict[str, Any]:
    """The JSON Schema of a request body declared by `spec` (unknown fields refused); `non_empty` for
    updates, which refuse a body that changes nothing."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: field_schema(field) for name, field in spec.items()},
    }
    if non_empty:
        schema["minProperties"] = 1
    required = [name for name, field in spec.items() if field.required]
    if required:
        schema["required"] = required
    return schema


def query_parameters(spec: Spec) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for the query parameters declared by `spec`."""
    params = []
    for name, field in spec.items():
        schema = field_schema(field)
        if field.kind in ("str_list", "uuid_list"):
            schema = {"type": "string", "description": "comma-separated list"}
        params.append({"name": name, "in": "query", "required": field.required, "schema": schema})
    return params
