"""How a server is made to go away, decided from its recorded state and allowed actions."""

from __future__ import annotations

import pytest
from scaleway_bodies import server_body

from providers.scaleway.mapping import server_from_body
from providers.scaleway.provider import Termination, termination


@pytest.mark.parametrize(
    ("state", "detail", "changes", "expected"),
    [
        ("running", "booting kernel", {}, Termination.TERMINATE),
        ("stopped", None, {}, Termination.DELETE),
        ("starting", "allocating node", {}, Termination.WAIT),
        ("stopping", "terminating", {}, Termination.WAIT),
        ("stopped", None, {"state": "locked", "allowed_actions": []}, Termination.WAIT),
        ("stopped", None, {"state": "stopped in place", "allowed_actions": ["poweron", "poweroff"]},
         Termination.REFUSE),
        ("stopped", None, {"state": "stopped in place", "allowed_actions": ["poweron", "terminate"]},
         Termination.TERMINATE),
        ("stopped", None, {"state": "hibernating", "allowed_actions": []}, Termination.REFUSE),
    ],
)
def test_termination(state: str, detail: str | None, changes: dict[str, object], expected: Termination) -> None:
    body = {**server_body(state, detail), **changes}
    assert termination(server_from_body(body)) is expected
