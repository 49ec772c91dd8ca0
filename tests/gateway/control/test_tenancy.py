"""Another organization's ids on every control route: a 404 (or the documented refusal), never its data.

The routes come from the route table (`control_routes()`): every route that takes an id (in its path,
query or body) must have an entry in CASES, either a check that calls it with the other organization's
ids or the reason its ids are not an organization's (the shared catalog). A route added without one
fails `test_every_route_taking_ids_has_a_case`. Every list route is also read with the caller's own
key, and no byte of the other organization's rows may appear in any answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from gateway.control.routes import Route, control_routes
from inventiv.worker_secrets import worker_secrets

if TYPE_CHECKING:
    from conftest import Api


@dataclass(frozen=True)
class Foreign:
    """The other organization's rows, and strings only they hold (none may reach the caller)."""

    instance_id: str
    key_id: str
    offering_id: str
    markers: frozenset[str]


async def _foreign(api: Api) -> Foreign:
    tag = uuid.uuid4().hex[:10]
    instance_id = await api.insert_instance(
        org="other", provider_instance_id=f"srv-other-{tag}", provider_instance_name=f"name-other-{tag}",
        ip_address="203.0.113.77", error_message=f"error-other-{tag}",
    )
    await api.insert_volume(instance_id, f"vol-other-{tag}", 20 * 10**9)
    rows = await api.sql(
        "INSERT INTO action_logs (instance_id, action_type, component, status, metadata) VALUES"
        " (%(i)s, 'PROVISION', 'scheduler', 'success', %(m)s) RETURNING id",
        {"i": instance_id, "m": f'{{"note": "log-other-{tag}"}}'},
    )
    await api.insert_usage(created_at=datetime.now(UTC), model=f"model-other-{tag}", org="other",
                           instance_id=instance_id)
    _, key = await api.call("POST", "/api_keys", key=api.other_admin_key, expect=201,
                            json={"name": f"key-other-{tag}", "scopes": ["inference"]})
    _, offering = await api.call("POST", "/offerings", key=api.other_admin_key, expect=201, json={
        "model_id": api.ids["Qwen/Qwen2.5-0.5B-Instruct"], "model_code": f"code-{tag}", "visibility": "private"})
    markers = {instance_id, f"srv-other-{tag}", f"name-other-{tag}", "203.0.113.77", f"error-other-{tag}",
               f"vol-other-{tag}", str(rows[0][0]), f"log-other-{tag}", f"model-other-{tag}", key["id"],
               key["key"], key["key_prefix"], f"key-other-{tag}"}
    return Foreign(instance_id, key["id"], offering["id"], frozenset(markers))


def _assert_nothing_of(foreign: Foreign, body: Any) -> None:
    text = body if isinstance(body, str) else repr(body)
    leaked = {marker for marker in foreign.markers if marker in text}
    assert not leaked, (leaked, body)


async def _refused(api: Api, foreign: Foreign, method: str, path: str, status: int, **kwargs: Any) -> Any:
    got, body = await api.call(method, path, **kwargs)
    assert got == status, (got, body)
    _assert_nothing_of(foreign, body)
    return body


async def _instance_status(api: Api, instance_id: str) -> tuple[Any, ...]:
    return (await api.sql("SELECT status, worker_status FROM instances WHERE id = %(i)s", {"i": instance_id}))[0]


# One check per route that takes ids ----------------------------------------------------------------


async def _get_instance(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "GET", f"/instances/{foreign.instance_id}", 404)


async def _terminate_instance(api: Api, foreign: Foreign) -> None:
    before = await _instance_status(api, foreign.instance_id)
    await _refused(api, foreign, "DELETE", f"/instances/{foreign.instance_id}", 404)
    assert await _instance_status(api, foreign.instance_id) == before
    assert await api.commands() == []


async def _action_logs_of_instance(api: Api, foreign: Foreign) -> None:
    body = await _refused(api, foreign, "GET", f"/action_logs?instance_id={foreign.instance_id}", 200)
    assert body["data"] == []


async def _create_key_for_other(api: Api, foreign: Foreign) -> None:
    count = "SELECT count(*) FROM api_keys WHERE organization_id = %(o)s"
    before = await api.sql(count, {"o": api.other_org_id})
    await _refused(api, foreign, "POST", "/api_keys", 403,
                   json={"organization_id": api.other_org_id, "name": "intruder", "scopes": ["admin"]})
    assert await api.sql(count, {"o": api.other_org_id}) == before


async def _revoke_other_key(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "DELETE", f"/api_keys/{foreign.key_id}", 404)
    rows = await api.sql("SELECT revoked_at FROM api_keys WHERE id = %(k)s", {"k": foreign.key_id})
    assert rows == [(None,)]



async def _limit_other_key(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "PATCH", f"/api_keys/{foreign.key_id}", 404, json={"requests_per_minute": 1})
    rows = await api.sql("SELECT requests_per_minute FROM api_keys WHERE id = %(k)s", {"k": foreign.key_id})
    assert rows == [(None,)]


async def _organization_seen_from_other(api: Api, foreign: Foreign, method: str, **kwargs: Any) -> None:
    # Platform admins manage every organization (gateway/control/organizations.py); the caller's own key is
    # one, so the check runs the other way: the other organization's admin key (not a platform's) asks
    # for the caller's organization, and must not learn it exists.
    got, body = await api.call(method, f"/organizations/{api.org_id}", key=api.other_admin_key, **kwargs)
    assert got == 404, (got, body)
    assert api.org_id not in repr(body) and "demo" not in repr(body), body


async def _get_other_organization(api: Api, foreign: Foreign) -> None:
    await _organization_seen_from_other(api, foreign, "GET")


async def _change_other_organization(api: Api, foreign: Foreign) -> None:
    await _organization_seen_from_other(api, foreign, "PATCH", json={"name": "taken over"})
    assert await api.sql("SELECT name FROM organizations WHERE id = %(o)s", {"o": api.org_id}) != [("taken over",)]

async def _offerings_of_other(api: Api, foreign: Foreign) -> None:
    # Offerings are the shared catalog's: every admin key reads every one (gateway/control/access.py);
    # the filter must still bring nothing else of the other organization along.
    body = await _refused(api, foreign, "GET", f"/offerings?organization_id={api.other_org_id}", 200)
    assert [o["id"] for o in body["data"]] == [foreign.offering_id]


async def _create_offering_for_other(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "POST", "/offerings", 403, json={
        "organization_id": api.other_org_id, "model_id": api.ids["Qwen/Qwen2.5-0.5B-Instruct"],
        "model_code": "intruder"})
    assert await api.sql("SELECT 1 FROM offerings WHERE model_code = 'intruder'") == []


async def _change_other_offering(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "PATCH", f"/offerings/{foreign.offering_id}", 403,
                   json={"visibility": "public", "is_active": False})
    rows = await api.sql("SELECT visibility, is_active FROM offerings WHERE id = %(o)s", {"o": foreign.offering_id})
    assert rows == [("private", True)]


async def _usage_of_other(api: Api, foreign: Foreign) -> None:
    await _refused(api, foreign, "GET", f"/usage?organization_id={api.other_org_id}", 403)


async def _heartbeat_for_other(api: Api, foreign: Foreign) -> None:
    # A worker of the caller's organization, with its own instance's secret, reporting on the other's.
    mine = await api.insert_instance(org="mine")
    secret = worker_secrets(api.settings).for_instance(mine)
    before = await _instance_status(api, foreign.instance_id)
    await _refused(api, foreign, "POST", "/internal/workers/heartbeat", 401, key=secret,
                   json={"instance_id": foreign.instance_id, "worker_status": "ready"})
    assert await _instance_status(api, foreign.instance_id) == before


Check = Callable[["Api", Foreign], Awaitable[None]]
# Every route taking an id: the check that calls it with the other organization's ids, or why none can.
CASES: dict[tuple[str, str], Check | str] = {
    ("POST", "/deployments"): "takes only shared catalog ids (instance type, zone, model); the instance it "
                              "creates is the caller's",
    ("GET", "/instances/{id}"): _get_instance,
    ("DELETE", "/instances/{id}"): _terminate_instance,
    ("GET", "/action_logs"): _action_logs_of_instance,
    ("POST", "/api_keys"): _create_key_for_other,
    ("DELETE", "/api_keys/{id}"): _revoke_other_key,
    ("PATCH", "/api_keys/{id}"): _limit_other_key,
    ("GET", "/organizations/{id}"): _get_other_organization,
    ("PATCH", "/organizations/{id}"): _change_other_organization,
    ("POST", "/models"): "adds to the shared catalog; hf_repo_id names a Hugging Face repository, not a row",
    ("PATCH", "/models/{id}"): "models are the shared catalog, of no organization, writable by any admin key "
                               "(gateway/control/access.py)",
    ("GET", "/offerings"): _offerings_of_other,
    ("POST", "/offerings"): _create_offering_for_other,
    ("PATCH", "/offerings/{id}"): _change_other_offering,
    ("GET", "/usage"): _usage_of_other,
    ("POST", "/internal/workers/heartbeat"): _heartbeat_for_other,
}


def _names_an_id(name: str, schema: dict[str, Any]) -> bool:
    items = schema.get("items", {})
    return (name == "id" or name.endswith(("_id", "_ids")) or schema.get("format") == "uuid"
            or items.get("format") == "uuid")


def _takes_ids(route: Route) -> bool:
    op = route.operation
    params = [(p["name"], p["schema"]) for p in op.get("parameters", []) if p["in"] in ("path", "query")]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    fields = list(body.get("properties", {}).items())
    return "{" in route.path or any(_names_an_id(name, schema) for name, schema in params + fields)


def test_every_route_taking_ids_has_a_case() -> None:
    taking = {(r.method, r.path) for r in control_routes() if _takes_ids(r)}
    assert taking == set(CASES), {"without a case": taking - set(CASES), "stale": set(CASES) - taking}


@pytest.mark.parametrize("route", [k for k, v in CASES.items() if not isinstance(v, str)], ids=" ".join)
async def test_foreign_ids_are_refused_without_data(api: Api, route: tuple[str, str]) -> None:
    check = CASES[route]
    assert not isinstance(check, str)
    await check(api, await _foreign(api))


_LISTS = [r.path for r in control_routes() if r.method == "GET" and "{" not in r.path]


@pytest.mark.parametrize("path", _LISTS)
async def test_lists_show_nothing_of_another_organization(api: Api, path: str) -> None:
    foreign = await _foreign(api)
    _, body = await api.call("GET", path, expect=200)
    _assert_nothing_of(foreign, body)
