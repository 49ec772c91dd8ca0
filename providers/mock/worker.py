"""A fast OpenAI-compatible stand-in for a vLLM GPU worker: for tests, the local mock cloud, benchmarks.

Routes, shaped like vLLM's: POST /v1/chat/completions and /v1/completions (JSON, or SSE with
`"stream": true`), POST /v1/embeddings, GET /v1/models, /health and /metrics (the vLLM gauges the
scheduler reads). Test-only: GET /mock/stats (counters, and the last body and headers received, to
check what the gateway forwarded) and POST /mock/reset.

Generated text is deterministic (token i is a fixed word), so one request always gives the same bytes
but for `id` and `created`. A request may carry a `"mock"` object (real servers ignore unknown fields,
the gateway forwards it) to inject faults: `status` (answer with that HTTP error), `abort_after` (send
that many content chunks, then drop the connection), `delay_ms` / `first_delay_ms` (timing),
`no_final_newline` (end on `data: [DONE]\\n`), `end_delay_ms` (wait that long after `[DONE]` before ending
the response, as a server that flushes its last bytes late) and `ping_every` (an SSE comment every N chunks).

The per-chunk path only concatenates bytes: the chunk tails are encoded at import and the head
(id, created, model) once per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import math
import os
import struct
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
import uvloop
from aiohttp import web

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"

# The words the mock generates, token i being _VOCAB[i % len(_VOCAB)]: fixed so answers are
# deterministic, few so every chunk tail is encoded once at import, one word per token so the
# whitespace count of a reply fed back as a prompt equals its completion tokens.
_VOCAB = (
    "alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ",
    "india ", "juliett ", "kilo ", "lima ", "mike ", "november ", "oscar ", "papa ",
)  # fmt: skip
# vLLM refuses max_tokens beyond the context window; 32768 is Qwen2.5-0.5B-Instruct's. It also bounds
# the text one non-streaming answer builds.
_MAX_MODEL_LEN = 32768
# Benchmark prompts can be long; aiohttp's 1 MiB default would answer them 413.
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Benchmarks open thousands of connections at once (the kernel caps this at somaxconn).
_BACKLOG = 4096
# Random bytes in a response id (hex in the id, like vLLM's): unique across workers without a counter.
_ID_BYTES = 16
# Routes counted in /mock/stats `requests`, listed up front so every key reads 0 before any traffic.
_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/health", "/metrics")
# OpenAI's error `type` where it is not simply invalid_request_error (4xx) or server_error (5xx).
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_METRICS_HEADERS = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
_PING = b": ping\n\n"
_DONE = b"data: [DONE]\n\n"
_DONE_NO_BLANK_LINE = b"data: [DONE]\n"
_CYCLE_TEXT = "".join(_VOCAB)
_TEXT_PREFIXES = tuple("".join(_VOCAB[:k]) for k in range(len(_VOCAB)))


def _tail(choice: dict[str, Any]) -> bytes:
    # A chunk is its request's head, which ends in `"choices":[{"index":0,`, plus one of these.
    return orjson.dumps(choice)[1:] + b"]}\n\n"


def _text(tokens: int) -> str:
    cycles, rest = divmod(tokens, len(_VOCAB))
    return _CYCLE_TEXT * cycles + _TEXT_PREFIXES[rest]


def _chat_choice(text: str, finish_reason: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}


def _text_choice(text: str, finish_reason: str) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker serves and how fast; a request's `mock` object overrides the timing."""

    model: str = DEFAULT_MODEL
    # Completion tokens when a request sets no max_tokens: short, so tests and benchmarks stay fast.
    tokens: int = 16
    token_delay_ms: float = 0.0
    # None: the same as token_delay_ms.
    first_token_delay_ms: float | None = None
    # 0: no `: ping` comments.
    ping_every: int = 0
    # Small: embedding tests compare whole vectors.
    embedding_dim: int = 8
    # What vllm:num_requests_waiting reports, to make a worker look queued to the scheduler.
    num_waiting: int = 0
    # As vLLM's --api-key / VLLM_API_KEY: every /v1 route then wants `Authorization: Bearer <key>`
    # (/health and /metrics stay open, as vLLM leaves them). None: no key, anyone may call.
    api_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.embedding_dim < 1:
            raise ValueError("tokens and embedding_dim must be at least 1")
        first = self.first_token_delay_ms or 0.0
        if min(self.token_delay_ms, first, self.ping_every, self.num_waiting) < 0:
            raise ValueError("delays, ping_every and num_waiting must not be negative")


@dataclass(frozen=True, slots=True)
class _Hooks:
    """One request's timing and faults: the config's, or its `mock` object's."""

    first_delay_s: float
    delay_s: float
    ping_every: int
    status: int | None = None
    abort_after: int | None = None
    final_blank_line: bool = True
    end_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Kind:
    """What differs between chat and text completions."""

    route: str
    id_prefix: str
    object: str
    chunk_object: str
    prompt_field: str
    prompt_types: tuple[type, ...]
    first_tail: bytes
    tails: tuple[bytes, ...]
    final_tails: dict[str, bytes]
    choice: Callable[[str, str], dict[str, Any]]


_REASONS = ("stop", "length")
_CHAT = _Kind(
    route="/v1/chat/completions",
    id_prefix="chatcmpl-",
    object="chat.completion",
    chunk_object="chat.completion.chunk",
    prompt_field="messages",
    prompt_types=(list,),
    # OpenAI announces the role in the first chunk only.
    first_tail=_tail({"delta": {"role": "assistant", "content": _VOCAB[0]}, "logprobs": None, "finish_reason": None}),
    tails=tuple(_tail({"delta": {"content": w}, "logprobs": None, "finish_reason": None}) for w in _VOCAB),
    final_tails={r: _tail({"delta": {}, "logprobs": None, "finish_reason": r}) for r in _REASONS},
    choice=_chat_choice,
)
_TEXT_TAILS = tuple(_tail({"text": w, "logprobs": None, "finish_reason": None}) for w in _VOCAB)
_COMPLETION = _Kind(
    route="/v1/completions",
    id_prefix="cmpl-",
    object="text_completion",
    chunk_object="text_completion",
    prompt_field="prompt",
    prompt_types=(str, list),
    first_tail=_TEXT_TAILS[0],
    tails=_TEXT_TAILS,
    final_tails={r: _tail({"text": "", "logprobs": None, "finish_reason": r}) for r in _REASONS},
    choice=_text_choice,
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one completion request asked for, validated."""

    model: str
    prompt_tokens: int
    tokens: int
    finish_reason: str
    include_usage: bool

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.tokens, "total_tokens": total}


@dataclass(slots=True)
class _Stats:
    requests: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(_ROUTES, 0))
    streams: int = 0
    include_usage_requests: int = 0
    disconnects: int = 0
    unauthorized: int = 0
    aborted: int = 0
    errors: int = 0
    completed: int = 0
    last_request: dict[str, Any] | None = None


class _Worker:
    """One app's state: its config, what was encoded from it, and the counters."""

    __slots__ = ("config", "hooks", "in_flight", "metrics_head", "metrics_tail", "models_body", "stats")

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        first_ms = config.token_delay_ms if config.first_token_delay_ms is None else config.first_token_delay_ms
        self.hooks = _Hooks(first_ms / 1000, config.token_delay_ms / 1000, config.ping_every)
        self.stats = _Stats()
        # Not a counter: /mock/reset leaves it, or requests finishing after a reset would drive it negative.
        self.in_flight = 0
        self.models_body = orjson.dumps({"object": "list", "data": [_model_card(config.model)]})
        self.metrics_head, self.metrics_tail = _metrics_template(config.model, config.num_waiting)

    def snapshot(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.stats), "in_flight": self.in_flight}


_WORKER = web.AppKey("mock_worker", _Worker)


class _ApiError(Exception):
    """Refuses a request with an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def response(self) -> web.Response:
        fallback = "server_error" if self.status >= 500 else "invalid_request_error"
        error = {
            "message": self.message,
            "type": _ERROR_TYPES.get(self.status, fallback),
            "param": self.param,
            "code": self.code,
        }
        return _json(orjson.dumps({"error": error}), self.status)


def _bad(message: str, param: str) -> _ApiError:
    return _ApiError(400, message, "invalid_request", param)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _model_card(model: str) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": _MAX_MODEL_LEN,
    }


def _metrics_template(model: str, waiting: int) -> tuple[bytes, bytes]:
    """The /metrics text around the one value that changes, the running count."""
    label = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    head = (
        "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="{label}"}} '
    )
    tail = (
        "\n# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{model_name="{label}"}} {float(waiting)}\n'
    )
    return head.encode(), tail.encode()


def _opt_int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"`mock.{key}` must be a non-negative integer", f"mock.{key}")
    return value


def _opt_seconds(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise _bad(f"`mock.{key}` must be a non-negative number", f"mock.{key}")
    return value / 1000


def _parse_hooks(raw: object, default: _Hooks) -> _Hooks:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise _bad("`mock` must be an object", "mock")
    status = _opt_int(raw, "status")
    if status is not None and not 400 <= status <= 599:
        raise _bad("`mock.status` must be an HTTP error status, 400 to 599", "mock.status")
    delay = _opt_seconds(raw, "delay_ms")
    first = _opt_seconds(raw, "first_delay_ms")
    ping_every = _opt_int(raw, "ping_every")
    # As in WorkerConfig, the first-token delay follows the per-token one unless set itself.
    first_fallback = default.first_delay_s if delay is None else delay
    return _Hooks(
        first_delay_s=first_fallback if first is None else first,
        delay_s=default.delay_s if delay is None else delay,
        ping_every=default.ping_every if ping_every is None else ping_every,
        status=status,
        abort_after=_opt_int(raw, "abort_after"),
        final_blank_line=not raw.get("no_final_newline"),
        end_delay_s=_opt_seconds(raw, "end_delay_ms") or 0.0,
    )


def _count_tokens(value: object) -> int:
    # Words stand in for tokens; a token-id list (completions, embeddings) counts one per id.
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_tokens(item) for item in value)
    if isinstance(value, dict):
        return _count_tokens(value.get("content")) + _count_tokens(value.get("text"))
    return 1 if isinstance(value, int) and not isinstance(value, bool) else 0


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("`model` is required", "model")
    return model


def _max_tokens(body: dict[str, Any]) -> int | None:
    # OpenAI's newer name wins over the old one when both are sent.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_MODEL_LEN:
            raise _bad(f"`{key}` must be an integer from 1 to {_MAX_MODEL_LEN}", key)
        return value
    return None


def _plan(body: dict[str, Any], kind: _Kind, config: WorkerConfig) -> _Plan:
    model = _model(body)
    prompt = body.get(kind.prompt_field)
    if not prompt or not isinstance(prompt, kind.prompt_types):
        raise _bad(f"`{kind.prompt_field}` is required", kind.prompt_field)
    max_tokens = _max_tokens(body)
    options = body.get("stream_options")
    return _Plan(
        model=model,
        prompt_tokens=max(1, _count_tokens(prompt)),
        tokens=config.tokens if max_tokens is None else max_tokens,
        finish_reason="stop" if max_tokens is None else "length",
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
    )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request, worker: _Worker) -> None:
    worker.stats.aborted += 1
    if request.transport is not None:
        request.transport.abort()


async def _read_body(request: web.Request, worker: _Worker) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    # Recorded before validation, so a test also sees what was forwarded when it was refused.
    # Names lowercased: HTTP header names are case-insensitive, and proxies differ in how they spell them.
    headers = {str(name).lower(): value for name, value in request.headers.items()}
    worker.stats.last_request = {"path": request.path, "headers": headers, "body": body}
    if not isinstance(body, dict):
        raise _ApiError(400, "The body must be a JSON object", "invalid_json")
    return body


async def _answer(request: web.Request, worker: _Worker, hooks: _Hooks, delay_s: float, body: bytes) -> web.Response:
    """Send a JSON body after its delay, unless told to drop the connection or the client left."""
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    if hooks.abort_after is not None:
        _abort(request, worker)
    elif _gone(request):
        worker.stats.disconnects += 1
    else:
        worker.stats.completed += 1
    # On a dead connection aiohttp fails to send this and takes it as the client's disconnect.
    return _json(body)


async def _events(kind: _Kind, plan: _Plan, hooks: _Hooks, head: bytes) -> AsyncGenerator[bytes, None]:
    chunk_head = b"data: " + head + b',"choices":[{"index":0,'
    count = plan.tokens if hooks.abort_after is None else min(plan.tokens, hooks.abort_after)
    delay_s = hooks.first_delay_s
    for i in range(count):
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        delay_s = hooks.delay_s
        yield chunk_head + (kind.tails[i % len(_VOCAB)] if i else kind.first_tail)
        if hooks.ping_every and (i + 1) % hooks.ping_every == 0:
            yield _PING
    if hooks.abort_after is not None:
        return
    yield chunk_head + kind.final_tails[plan.finish_reason]
    if plan.include_usage:
        yield b"data: " + head + b',"choices":[],"usage":' + orjson.dumps(plan.usage()) + b"}\n\n"
    yield _DONE if hooks.final_blank_line else _DONE_NO_BLANK_LINE


async def _stream(
    request: web.Request, worker: _Worker, kind: _Kind, plan: _Plan, hooks: _Hooks, head: bytes
) -> web.StreamResponse:
    worker.stats.streams += 1
    worker.stats.include_usage_requests += plan.include_usage
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        await resp.prepare(request)
        async with aclosing(_events(kind, plan, hooks, head)) as events:
            async for event in events:
                await resp.write(event)
        if hooks.end_delay_s > 0:
            await asyncio.sleep(hooks.end_delay_s)
    except ConnectionResetError:
        # The client left and the next write found out (aiohttp without handler_cancellation).
        worker.stats.disconnects += 1
        return resp
    if hooks.abort_after is not None:
        _abort(request, worker)
    else:
        worker.stats.completed += 1
    return resp


_Handler = Callable[[web.Request, _Worker, dict[str, Any], _Hooks], Awaitable[web.StreamResponse]]


def _completion_handler(kind: _Kind) -> _Handler:
    async def handle(request: web.Request, worker: _Worker, body: dict[str, Any], hooks: _Hooks) -> web.StreamResponse:
        plan = _plan(body, kind, worker.config)
        response_id = kind.id_prefix + os.urandom(_ID_BYTES).hex()
        created = int(time.time())
        if body.get("stream") is True:
            fields = {"id": response_id, "object": kind.chunk_object, "created": created, "model": plan.model}
            # The fields every chunk repeats, without the closing brace the chunk adds after them.
            head = orjson.dumps(fields)[:-1]
            return await _stream(request, worker, kind, plan, hooks, head)
        answer = orjson.dumps(
            {
                "id": response_id,
                "object": kind.object,
                "created": created,
                "model": plan.model,
                "choices": [kind.choice(_text(plan.tokens), plan.finish_reason)],
                "usage": plan.usage(),
            }
        )
        # As long as the same answer would have taken to stream.
        delay_s = hooks.first_delay_s + (plan.tokens - 1) * hooks.delay_s
        return await _answer(request, worker, hooks, delay_s, answer)

    return handle


def _embedding_inputs(value: object) -> list[Any]:
    # OpenAI's four forms: a string, a list of strings, one token-id list, a list of token-id lists.
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]
    else:
        items = value if isinstance(value, list) else []
    if not items or not all(isinstance(item, str | list) and item for item in items):
        raise _bad("`input` must be a non-empty string or list", "input")
    return items


def _vector(item: str | list[int], dim: int) -> list[float]:
    data = item.encode() if isinstance(item, str) else orjson.dumps(item)
    # Two hash bytes per component, spread over [-1, 1), then scaled to unit length like OpenAI's.
    raw = hashlib.shake_128(data).digest(2 * dim)
    values = [v / 32768 - 1 for v in struct.unpack(f"<{dim}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _base64_floats(vector: list[float]) -> str:
    # The SDK's default encoding_format: little-endian float32s.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


_ENCODINGS: dict[str, Callable[[list[float]], Any]] = {"float": lambda v: v, "base64": _base64_floats}


async def _handle_embeddings(
    request: web.Request, worker: _Worker, body: dict[str, Any], hooks: _Hooks
) -> web.StreamResponse:
    model = _model(body)
    items = _embedding_inputs(body.get("input"))
    encode = _ENCODINGS.get(body.get("encoding_format") or "float")
    if encode is None:
        raise _bad("`encoding_format` must be float or base64", "encoding_format")
    dim = worker.config.embedding_dim
    data = [
        {"object": "embedding", "index": i, "embedding": encode(_vector(item, dim))} for i, item in enumerate(items)
    ]
    tokens = max(1, _count_tokens(items))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    answer = orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
    return await _answer(request, worker, hooks, hooks.first_delay_s, answer)


def _endpoint(route: str, handle: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A POST route: counting, body parsing, the `mock` hooks and errors around `handle`."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        worker = request.app[_WORKER]
        worker.stats.requests[route] += 1
        worker.in_flight += 1
        try:
            body = await _read_body(request, worker)
            hooks = _parse_hooks(body.get("mock"), worker.hooks)
            if hooks.status is not None:
                raise _ApiError(hooks.status, f"Mock error {hooks.status}, as requested", "mock_status")
            return await handle(request, worker, body, hooks)
        except _ApiError as exc:
            worker.stats.errors += 1
            return exc.response()
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client leaves (with handler_cancellation=True).
            worker.stats.disconnects += 1
            raise
        finally:
            worker.in_flight -= 1

    return endpoint


async def _models(request: web.Request) -> web.StreamResponse:
    worker = request.app[_WORKER]
    worker.stats.requests["/v1/models"] += 1
    return _json(worker.models_body)


async def _health(request: web.Request) -> web.StreamResponse:
    request.app[_WORKER].stats.requests["/health"] += 1
    return web.Response()


async def _metrics(request: web.Request) -> web.StreamResponse:
    worker = request.app[_WORKER]
    worker.stats.requests["/metrics"] += 1
    text = worker.metrics_head + str(float(worker.in_flight)).encode() + worker.metrics_tail
    return web.Response(body=text, headers=_METRICS_HEADERS)


async def _mock_stats(request: web.Request) -> web.StreamResponse:
    return _json(orjson.dumps(request.app[_WORKER].snapshot()))


async def _mock_reset(request: web.Request) -> web.StreamResponse:
    worker = request.app[_WORKER]
    worker.stats = _Stats()
    return _json(orjson.dumps(worker.snapshot()))


def config_of(app: web.Application) -> WorkerConfig:
    """The config a worker app was created with (tests call a worker directly with its key)."""
    return app[_WORKER].config


def _require_key(key: str) -> Any:
    expected = f"Bearer {key}"

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/v1") and request.headers.get("Authorization") != expected:
            request.app[_WORKER].stats.unauthorized += 1
            return _ApiError(401, "Unauthorized: a valid API key is required", "invalid_api_key").response()
        return await handler(request)

    return check


def create_app(config: WorkerConfig) -> web.Application:
    # No middleware without a key: the benchmarks' workers pay nothing for it.
    middlewares = [_require_key(config.api_key)] if config.api_key else []
    app = web.Application(client_max_size=_CLIENT_MAX_SIZE, middlewares=middlewares)
    app[_WORKER] = _Worker(config)
    app.router.add_post(_CHAT.route, _endpoint(_CHAT.route, _completion_handler(_CHAT)))
    app.router.add_post(_COMPLETION.route, _endpoint(_COMPLETION.route, _completion_handler(_COMPLETION)))
    app.router.add_post("/v1/embeddings", _endpoint("/v1/embeddings", _handle_embeddings))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/mock/stats", _mock_stats)
    app.router.add_post("/mock/reset", _mock_reset)
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m providers.mock.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the served model id")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens when max_tokens is unset")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between SSE chunks")
    parser.add_argument("--first-token-delay-ms", type=float, help="delay before the first chunk")
    parser.add_argument("--ping-every", type=int, default=0, help="`: ping` every N chunks, 0: never")
    parser.add_argument("--embedding-dim", type=int, default=8)
    parser.add_argument("--num-waiting", type=int, default=0, help="vllm:num_requests_waiting to report")
    # The key comes from the environment only (VLLM_API_KEY, as vLLM reads it): a command line is
    # readable by every user of the machine.
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = WorkerConfig(
            model=args.model,
            tokens=args.tokens,
            token_delay_ms=args.token_delay_ms,
            first_token_delay_ms=args.first_token_delay_ms,
            ping_every=args.ping_every,
            embedding_dim=args.embedding_dim,
            num_waiting=args.num_waiting,
            api_key=os.environ.get("VLLM_API_KEY") or None,
        )
    except ValueError as exc:
        parser.error(str(exc))
    web.run_app(
        create_app(config),
        host=args.host,
        port=args.port,
        access_log=None,
        backlog=_BACKLOG,
        # Stop generating the moment a client leaves, as vLLM aborts the request.
        handler_cancellation=True,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
