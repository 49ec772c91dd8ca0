"""Are the bytes a client got through a proxy the bytes the worker sends when asked directly?

The mock worker's answers are deterministic except for the response `id` and `created`, chosen once
per request and repeated in every chunk. `normalise` replaces the first ones it finds, wherever they
recur, so two answers to the same request compare equal byte for byte. A chunk carrying another id (a
proxy mixing two streams) is left as it is, and the comparison then fails, as it should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(rb'"id":"([^"]*)"')
_CREATED = re.compile(rb'"created":(\d+)')
_ID_PLACEHOLDER = b'"id":"<id>"'
_CREATED_PLACEHOLDER = b'"created":0'
# Bytes of context shown either side of the first difference.
_CONTEXT = 40


def normalise(body: bytes) -> bytes:
    id_match = _ID.search(body)
    if id_match is not None:
        body = body.replace(id_match.group(0), _ID_PLACEHOLDER)
    created_match = _CREATED.search(body)
    if created_match is not None:
        body = body.replace(created_match.group(0), _CREATED_PLACEHOLDER)
    return body


def first_difference(got: bytes, expected: bytes) -> str:
    """Where two bodies first differ, with some context: for a report a person reads."""
    at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    if at is None:
        if len(got) == len(expected):
            return "identical"
        at = min(len(got), len(expected))
    start = max(0, at - _CONTEXT)
    return (
        f"byte {at} (got {len(got)} bytes, expected {len(expected)}): "
        f"got {got[start : at + _CONTEXT]!r}, expected {expected[start : at + _CONTEXT]!r}"
    )


@dataclass(frozen=True, slots=True)
class ExpectedBody:
    """The normalised answer of the worker to one request, as a check on every response to it."""

    normalised: bytes

    @classmethod
    def from_reference(cls, body: bytes) -> ExpectedBody:
        return cls(normalise(body))

    def matches(self, body: bytes) -> bool:
        return normalise(body) == self.normalised
