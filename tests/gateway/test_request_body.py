"""gateway.request_body: the fields routing needs are checked, and the body is re-encoded only if it must be."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ApiError
from gateway.request_body import InferenceRequest, forward_body, parse_request

MESSAGES = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "Qwen/small", "messages": MESSAGES, **fields})


@pytest.mark.parametrize(
    ("raw", "streamable", "model", "stream", "wants_usage"),
    [
        (body(), True, "Qwen/small", False, False),
        (body(stream=True), True, "Qwen/small", True, False),
        (body(stream=False), False, "Qwen/small", False, False),
        (body(stream=None), False, "Qwen/small", False, False),
        (body(stream=True, stream_options={"include_usage": True}), True, "Qwen/small", True, True),
        (body(stream=True, stream_options={"include_usage": False}), True, "Qwen/small", True, False),
        (body(stream=True, stream_options={}), True, "Qwen/small", True, False),
        (body(stream=True, stream_options=None), True, "Qwen/small", True, False),
        (body(stream=True, stream_options={"include_usage": None}), True, "Qwen/small", True, False),
        # Fields the gateway does not act on are the worker's to judge.
        (body(temperature="hot", n=-3, extra={"x": [1, 2]}), True, "Qwen/small", False, False),
        (b'{"model": "demo/qwen-small", "input": "x"}', False, "demo/qwen-small", False, False),
        (b'  {"model":"m"}\n', True, "m", False, False),
        ('{"model": "mod\u00e8le"}'.encode(), True, "mod\u00e8le", False, False),
        # Not blank by the rule the OpenAPI document's pattern states (an unknown model is a 404 later).
        (orjson.dumps({"model": "\u3000\x1c"}), True, "\u3000\x1c", False, False),
    ],
    ids=[
        "chat", "stream", "stream-false-not-streamable", "stream-null", "include-usage", "include-usage-false",
        "empty-stream-options", "null-stream-options", "null-include-usage", "other-fields-unchecked",
        "embeddings", "whitespace", "unicode-model", "unicode-blank-model",
    ],
)
def test_parse_request_accepts(raw: bytes, streamable: bool, model: str, stream: bool, wants_usage: bool) -> None:
    req = parse_request(raw, streamable=streamable)
    assert (req.model, req.stream, req.wants_usage) == (model, stream, wants_usage)
    assert req.raw is raw
    assert req.body == orjson.loads(raw)


@pytest.mark.parametrize(
    ("raw", "streamable", "param", "code"),
    [
        (b"", True, None, "invalid_json"),
        (b"{", True, None, "invalid_json"),
        (b"model=x", True, None, "invalid_json"),
        (b"\xff\xfe{}", True, None, "invalid_json"),
        (b"[]", True, None, "invalid_json"),
        (b'"Qwen/small"', True, None, "invalid_json"),
        (b"null", True, None, "invalid_json"),
        (b"{}", True, "model", "missing_required_parameter"),
        (b'{"model": null}', True, "model", "missing_required_parameter"),
        (b'{"model": 7}', True, "model", "invalid_type"),
        (b'{"model": ["a"]}', True, "model", "invalid_type"),
        (b'{"model": ""}', True, "model", "invalid_type"),
        (b'{"model": "   "}', True, "model", "invalid_type"),
        (body(stream="true"), True, "stream", "invalid_type"),
        (body(stream=1), True, "stream", "invalid_type"),
        (body(stream=True), False, "stream", "invalid_value"),
        (body(stream=True, stream_options="usage"), True, "stream_options", "invalid_type"),
        (body(stream=True, stream_options=[True]), True, "stream_options", "invalid_type"),
        (body(stream=True, stream_options={"include_usage": "yes"}), True, "stream_options.include_usage",
         "invalid_type"),
        (body(stream=True, stream_options={"include_usage": 1}), True, "stream_options.include_usage", "invalid_type"),
    ],
    ids=[
        "empty", "truncated", "form-encoded", "not-utf8", "array", "string", "null", "no-model", "null-model",
        "number-model", "list-model", "empty-model", "blank-model", "string-stream", "int-stream",
        "stream-on-embeddings", "string-stream-options", "list-stream-options", "string-include-usage",
        "int-include-usage",
    ],
)
def test_parse_request_refuses(raw: bytes, streamable: bool, param: str | None, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(raw, streamable=streamable)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, code)
    assert error.message
    assert orjson.loads(error.body())["error"]["type"] == "invalid_request_error"


def parsed(raw: bytes) -> InferenceRequest:
    return parse_request(raw, streamable=True)


def test_forward_body_is_the_clients_bytes_when_nothing_changes() -> None:
    raw = b'{"model":"Qwen/small",  "messages":[{"role":"user","content":"hi"}],"stream":true}'
    assert forward_body(parsed(raw), "Qwen/small", add_usage=False) is raw


@pytest.mark.parametrize(
    ("raw", "model", "add_usage", "expected"),
    [
        (body(), "Qwen/Qwen2.5-0.5B", False, {"model": "Qwen/Qwen2.5-0.5B", "messages": MESSAGES}),
        (
            body(stream=True),
            "Qwen/small",
            True,
            {"model": "Qwen/small", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            body(stream=True, stream_options=None),
            "Qwen/small",
            True,
            {"model": "Qwen/small", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
        ),
        (
            body(stream=True, stream_options={"continuous_usage_stats": True, "include_usage": False}),
            "other/name",
            True,
            {"model": "other/name", "messages": MESSAGES, "stream": True,
             "stream_options": {"continuous_usage_stats": True, "include_usage": True}},
        ),
    ],
    ids=["model-rewritten", "usage-added", "usage-added-to-null-options", "usage-added-keeping-other-options"],
)
def test_forward_body_rewrites(raw: bytes, model: str, add_usage: bool, expected: dict[str, Any]) -> None:
    req = parsed(raw)
    before = orjson.loads(raw)
    assert orjson.loads(forward_body(req, model, add_usage)) == expected
    # The parsed body stays what the client sent (a retry on another worker starts from it again).
    assert req.body == before


def test_forward_body_keeps_field_order_and_values() -> None:
    raw = b'{"messages":[{"role":"user","content":"\\u00e9\\n"}],"temperature":0.1,"seed":-1,"model":"a/b"}'
    out = forward_body(parsed(raw), "c/d", add_usage=False)
    assert out == b'{"messages":[{"role":"user","content":"\xc3\xa9\\n"}],"temperature":0.1,"seed":-1,"model":"c/d"}'


# Properties: any JSON object a client may send ---------------------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(),
    # A huge string: far past one socket read, with escapes JSON must keep.
    st.integers(0, 100_000).map(lambda n: "\u00e9\"\\\n\u2028" * n),
)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=12)
_OPTIONS = st.one_of(st.none(), st.dictionaries(st.text(), _JSON).map(
    lambda d: {k: v for k, v in d.items() if k != "include_usage"}).flatmap(
    lambda d: st.sampled_from([d, {**d, "include_usage": True}, {**d, "include_usage": False}])))
_MODEL = st.text(min_size=1).filter(lambda m: m.strip(" \t\n\r\v\f"))
# Clients write JSON compactly, with ASCII escapes and spaces (Python's json's default), or indented.
_ENCODERS = [lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode(),
             lambda v: json.dumps(v).encode(), lambda v: json.dumps(v, indent=2).encode()]


_READ = ("model", "stream", "stream_options")


@st.composite
def _requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    # The fields the gateway reads are drawn below, with the types it accepts; any other key, any value.
    body = draw(st.dictionaries(st.text().filter(lambda k: k not in _READ), _JSON, max_size=6))
    body["model"] = draw(_MODEL)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
        body["stream_options"] = draw(_OPTIONS)
    return body, draw(st.sampled_from(_ENCODERS))(body)


def _typed(value: Any) -> Any:
    """The value with each number's type kept, so that 1 and 1.0 (or a big int and its float) differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@given(request=_requests(), model=_MODEL, add_usage=st.booleans())
def test_forward_body_changes_only_the_model_and_usage(
    request: tuple[dict[str, Any], bytes], model: str, add_usage: bool
) -> None:
    body, raw = request
    forwarded = forward_body(parse_request(raw, streamable=True), model, add_usage)
    # Python's json reads integers of any size exactly: the reference for what the client sent.
    expected = {**json.loads(raw), "model": model}
    if add_usage:
        expected["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    assert _typed(json.loads(forwarded)) == _typed(expected)
    if model == body["model"] and not add_usage:
        assert forwarded is raw
