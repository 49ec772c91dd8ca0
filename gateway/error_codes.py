"""The `code` of every error the gateway answers with (`{"error": {"code": ...}}`), in one list.

Clients branch on these, so they are part of the API: the OpenAPI document publishes them as an enum,
and a test holds every code the gateway raises to this list (tests/gateway/test_error_codes.py).
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    # Credentials and permissions.
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    FORBIDDEN_ORGANIZATION = "forbidden_organization"
    PLATFORM_ADMIN_REQUIRED = "platform_admin_required"
    MODEL_ACCESS_DENIED = "model_access_denied"
    MISSING_WORKER_TOKEN = "missing_worker_token"
    INVALID_WORKER_TOKEN = "invalid_worker_token"
    SESSION_EXPIRED = "session_expired"
    CSRF_TOKEN_INVALID = "csrf_token_invalid"
    # Malformed requests.
    INVALID_REQUEST = "invalid_request"
    MALFORMED_REQUEST = "malformed_request"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    INVALID_UUID = "invalid_uuid"
    INVALID_DATETIME = "invalid_datetime"
    INVALID_WINDOW = "invalid_window"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    EMPTY_UPDATE = "empty_update"
    REQUEST_TIMEOUT = "request_timeout"
    REQUEST_TOO_LARGE = "request_too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Things that do not exist, or not in a usable state.
    NOT_FOUND = "not_found"
    INSTANCE_NOT_FOUND = "instance_not_found"
    INSTANCE_TYPE_NOT_FOUND = "instance_type_not_found"
    ZONE_NOT_FOUND = "zone_not_found"
    MODEL_NOT_FOUND = "model_not_found"
    OFFERING_NOT_FOUND = "offering_not_found"
    ORGANIZATION_NOT_FOUND = "organization_not_found"
    API_KEY_NOT_FOUND = "api_key_not_found"
    INSTANCE_TYPE_INACTIVE = "instance_type_inactive"
    INSTANCE_TYPE_NOT_OFFERED = "instance_type_not_offered"
    ZONE_INACTIVE = "zone_inactive"
    ZONE_PROVIDER_MISMATCH = "zone_provider_mismatch"
    MODEL_INACTIVE = "model_inactive"
    # Conflicts with the current state.
    INSTANCE_TERMINATED = "instance_terminated"
    INSTANCE_CLOSED = "instance_closed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    MODEL_EXISTS = "model_exists"
    OFFERING_EXISTS = "offering_exists"
    ORGANIZATION_EXISTS = "organization_exists"
    # Limits.
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"
    LIMITS_UNAVAILABLE = "limits_unavailable"
    # The worker, and the gateway itself.
    NO_READY_WORKER = "no_ready_worker"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REFUSED = "upstream_refused"
    UPSTREAM_INVALID_RESPONSE = "upstream_invalid_response"
    UPSTREAM_ERROR = "upstream_error"  # a stream the worker cut, as its last event
    DRAINING = "draining"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL_ERROR = "internal_error"
    HTTP_ERROR = "http_error"  # any other HTTP error aiohttp raises
