"""The gateway's Prometheus metrics (served at GET /metrics).

Label values are bounded: `model` is a resolved model's repo id or "-", never the client's string.
With several gateway processes (`--workers N`), each writes its values to files in a shared folder
(prometheus_client's multiprocess mode, set up by `gateway.server`) and any process answers a scrape
with the sum over all of them; gauges say how they combine.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import Counter, Gauge, Histogram

# prometheus_client's switch to multiprocess mode, read when it is imported (gateway.server sets it).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR_ENV))


# Inference latencies run from milliseconds (embeddings, errors) to minutes (long generations).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Time to first token: a loaded GPU answers within a second, a queued one much later.
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "inventiv_gateway_requests", "Inference requests by route, model and HTTP status", ["route", "model", "status"]
)
LATENCY = Histogram(
    "inventiv_gateway_request_duration_seconds", "Request latency, to the last byte", ["route"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "inventiv_gateway_ttft_seconds", "Time to the first streamed byte from the worker", ["route"],
    buckets=_TTFT_BUCKETS,
)
# Phases of a request run from microseconds (auth, routing) to minutes (a worker's first byte).
_PHASE_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30, 120)
PHASE = Histogram(
    "inventiv_gateway_phase_seconds", "Time spent in each phase of an inference request (gateway/tracing.py)",
    ["phase"], buckets=_PHASE_BUCKETS,
)
# From a fifth of a millisecond (a loop that keeps up) to a second (one that does not).
_LAG_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LOOP_LAG = Histogram(
    "inventiv_gateway_event_loop_lag_seconds",
    "How late the event loop woke a task that was due (gateway/loop_lag.py): what any request may have waited",
    buckets=_LAG_BUCKETS,
)
TOKENS = Counter("inventiv_gateway_tokens", "Tokens by model and kind (prompt, completion)", ["model", "kind"])
IN_FLIGHT = Gauge(
    "inventiv_gateway_in_flight", "Requests in flight per worker instance", ["instance"], multiprocess_mode="livesum"
)
UPSTREAM_ERRORS = Counter(
    "inventiv_gateway_upstream_errors", "Failures talking to workers, by kind", ["kind"]
)
RETRIES = Counter("inventiv_gateway_upstream_retries", "Requests retried on another worker")
AFFINITY = Counter(
    "inventiv_gateway_affinity", "Session affinity lookups by result (hit, miss, failover, unavailable)", ["result"]
)
USAGE_BUFFERED = Gauge(
    "inventiv_gateway_usage_buffered", "Usage records buffered in gateway processes, not yet in Redis",
    multiprocess_mode="livesum",
)
USAGE_BACKLOG = Gauge(
    "inventiv_gateway_usage_backlog",
    "Entries of the usage stream in Redis (each a batch of records) not yet written to Postgres",
    multiprocess_mode="livemax",
)
USAGE_BUFFERED_BYTES = Gauge(
    "inventiv_gateway_usage_buffered_bytes", "Bytes of usage records buffered in gateway processes (bounded by"
    " INVENTIV_USAGE_BUFFER_MAX_BYTES per process)", multiprocess_mode="livesum",
)
USAGE_DROPPED = Counter(
    "inventiv_gateway_usage_dropped", "Usage records dropped because the local buffer overflowed"
)
USAGE_DURABLE = Counter(
    "inventiv_gateway_usage_durable",
    "Durable mode: records confirmed in Redis before the answer ended, or left buffered (fallback)", ["result"],
)
RATE_LIMITED = Counter(
    "inventiv_gateway_rate_limited", "Requests refused by a rate limit, by scope (key, organization) and limit",
    ["scope", "limit"],
)
LIMITS_UNAVAILABLE = Counter(
    "inventiv_gateway_limits_unavailable",
    "Limited requests whose limits Redis could not check, by the key's fail mode (open: served, closed: 503)",
    ["mode"],
)


# Label children through these caches: `labels()` costs about 2 µs a call, a cached child about
# 0.1 µs. Label values are bounded (see above), so are the caches. The per-request counters and
# histograms are applied by gateway/hot_metrics.py's fold.
requests = functools.lru_cache(maxsize=4096)(REQUESTS.labels)
tokens = functools.lru_cache(maxsize=1024)(TOKENS.labels)
in_flight = functools.lru_cache(maxsize=4096)(IN_FLIGHT.labels)
affinity = functools.lru_cache(maxsize=16)(AFFINITY.labels)
upstream_errors = functools.lru_cache(maxsize=64)(UPSTREAM_ERRORS.labels)
usage_durable = functools.lru_cache(maxsize=4)(USAGE_DURABLE.labels)
rate_limited = functools.lru_cache(maxsize=16)(RATE_LIMITED.labels)
limits_unavailable = functools.lru_cache(maxsize=4)(LIMITS_UNAVAILABLE.labels)


def forget_instance(instance_id: str) -> None:
    """Drop the in-flight series of an instance that left the fleet.

    In multiprocess mode series cannot be removed (their values live in the processes' files); a
    departed instance's gauge then simply stays at zero.
    """
    if multiprocess():
        return
    try:
        IN_FLIGHT.remove(instance_id)
    except KeyError:
        return
    in_flight.cache_clear()
