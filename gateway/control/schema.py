"""Building blocks of the OpenAPI document: JSON Schemas from short names, and one operation's description.

The route table (routes.py) describes each control API route with them, and openapi.py the rest of the
document.
"""

from __future__ import annotations

import enum
from typing import Any

from gateway.control.input_validation import Spec, query_parameters

Schema = dict[str, Any]

_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


_SCALARS: dict[str, Schema] = {
    "uuid": {"type": "string", "format": "uuid"},
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "num": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "object": {"type": "object"},
}


def scalar(kind: str) -> Schema:
    """A scalar schema from a short name; a trailing `?` makes it nullable."""
    nullable = kind.endswith("?")
    schema = dict(_SCALARS[kind.rstrip("?")])
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def enum_of(values: type[enum.StrEnum]) -> Schema:
    """A string that is one of the enum's values: the document lists the members the code uses."""
    return {"type": "string", "enum": [member.value for member in values]}


def described(kind: str, description: str) -> Schema:
    return scalar(kind) | {"description": description}


def obj(required: bool = True, /, **fields: str | Schema) -> Schema:
    props = {name: scalar(f) if isinstance(f, str) else f for name, f in fields.items()}
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(props)
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def list_of(name: str) -> Schema:
    return obj(
        object={"type": "string", "const": "list"},
        data={"type": "array", "items": ref(name)},
        has_more="bool",
        next_cursor="str?",
    )


def array(kind: str | Schema) -> Schema:
    return {"type": "array", "items": scalar(kind) if isinstance(kind, str) else kind}


def with_defaults(schema: Schema, defaults: dict[str, Any]) -> Schema:
    """A body schema whose optional properties show what their absence means."""
    for name, value in defaults.items():
        schema["properties"][name]["default"] = value
    return schema


# Operations --------------------------------------------------------------------------------------


def operation(
    tag: str,
    summary: str,
    ok: tuple[int, Schema | None],
    *,
    query: Spec | None = None,
    body: Schema | None = None,
    errors: tuple[int, ...] = (400, 401, 403),
    security: str | None = "apiKey",
    path_id: bool = False,
) -> Schema:
    status, schema = ok
    op: Schema = {"tags": [tag], "summary": summary, "responses": {}}
    params = ([_ID_PARAM] if path_id else []) + (query_parameters(query) if query else [])
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        # Any body past INVENTIV_MAX_BODY_BYTES is refused before its handler runs.
        errors = tuple(sorted({*errors, 413}))
    response: Schema = {"description": "OK" if status < 300 else "Accepted"}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    op["responses"][str(status)] = response
    for code in errors:
        op["responses"][str(code)] = {"$ref": f"#/components/responses/Error{code}"}
    if security == "apiKey":
        # A browser signed in to the console sends its session cookie instead (CSRF header on writes).
        op["security"] = [{security: []}, {"consoleSession": []}]
    elif security is not None:
        op["security"] = [{security: []}]
    return op


