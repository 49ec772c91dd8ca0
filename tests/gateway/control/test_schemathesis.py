"""Schemathesis against the gateway's own /openapi.json: what the document allows, the gateway accepts,
and what the gateway answers, the document describes.

Every operation of the served document gets a bounded, derandomized run of schema-valid requests with the
admin key, checked for: no 5xx, a documented status code and content type, a body that matches the
documented schema, and no 4xx validation error (400, 413) for a request the schema calls valid. Then a
run of schema-invalid requests (hostile input: wrong types, missing or extra fields, bad headers, no
key), checked for the same documented answers and for being refused.
The run keeps its own fixture intact: a DELETE never names the admin key it authenticates with, and
the app has no scheduler (deployments only write rows and a stream entry; no worker starts).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import CheckContext, GenerationMode, Response
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi import checks

from gateway.control.routes import openapi_document

if TYPE_CHECKING:
    from conftest import Api

# Enough to reach every optional field and bound of an operation's schema a few times, and each way of
# breaking it; ~30 operations at these counts take about 35 s of CPU.
MAX_EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}
# Refusals of schema-valid input that no schema can express, each a documented 400 with its own code: a
# cursor is an opaque token of the list that returned it; a usage window is bounded across two parameters.
CROSS_FIELD_REFUSALS = {"invalid_cursor", "invalid_window"}


def schema_valid_accepted(ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
    """schemathesis' positive_data_acceptance, except for the refusals above."""
    if response.status_code == 400 and _error_code(response) in CROSS_FIELD_REFUSALS:
        return None
    return checks.positive_data_acceptance(ctx, response, case)


def _error_code(response: Response) -> object:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


CONFORMANCE: list[CheckFunction] = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, schema_valid_accepted],
    GenerationMode.NEGATIVE: [*CONFORMANCE, checks.negative_data_rejection],
}


def _labels() -> list[str]:
    return [f"{method.upper()} {path}" for path, item in openapi_document()["paths"].items() for method in item]


def _run(schema_url: str, label: str, mode: GenerationMode, headers: dict[str, str], keep_id: str) -> None:
    """Requests of `mode` for one operation, each validated; raises on the first failing example."""
    schema = schemathesis.openapi.from_url(schema_url)
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    base_url = schema_url.removesuffix("/openapi.json")
    # Workers authenticate with their own token, which the admin key is not: past validation, a 401.
    worker_route = operation.definition.raw.get("security") == [{"workerToken": []}]

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES[mode], derandomize=True, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def requests_conform(case: schemathesis.Case) -> None:
        # The run authenticates with this key: revoking it would turn every later example into a 401.
        hypothesis.assume((case.path_parameters or {}).get("id") != keep_id)
        response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS[mode])
        # Valid requests carry the admin key: a 401 would mean the run tests nothing past authentication.
        assert response.status_code != 401 or worker_route or not mode.is_positive, response.text

    try:
        requests_conform()
    except Unsatisfiable:
        # Negative mode on an operation with no parameter and no body: there is nothing to break.
        assert not mode.is_positive
        pytest.skip(f"{label} takes no input to make invalid")


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("label", _labels())
async def test_operation_conforms_to_the_document(api: Api, label: str, mode: GenerationMode) -> None:
    schema_url = str(api.client.make_url("/openapi.json"))
    await asyncio.to_thread(_run, schema_url, label, mode, api.auth(), api.admin_key_id)
