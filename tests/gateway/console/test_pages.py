"""The console's pages over the real app: the fleet and an instance under the organization rules, the
deployment form's errors and Idempotency-Key, keys, usage with its CSV, and versioned static files."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Console

from gateway.console.render import STATIC_VERSION, static_url


async def _instance(console: Console, org_id: str | None, status: str = "ready") -> str:
    rows = await console.sql(
        "INSERT INTO instances (provider_id, zone_id, instance_type_id, model_id, organization_id, status,"
        " worker_port) SELECT p.id, z.id, t.id, m.id, %(org)s, %(status)s, 8000 FROM providers p, zones z,"
        " instance_types t, models m WHERE p.code = 'mock' AND z.code = 'local-1' AND t.code = 'MOCK-GPU-S'"
        " AND m.hf_repo_id = 'Qwen/Qwen2.5-0.5B-Instruct' RETURNING id", {"org": org_id, "status": status})
    return str(rows[0][0])


async def test_the_fleet_shows_what_the_api_shows_to_this_organization(console: Console) -> None:
    await console.sign_in()
    mine = await _instance(console, console.org_id)
    failed = await _instance(console, console.org_id, "failed")
    operators = await _instance(console, None)
    theirs = await _instance(console, console.other_org_id)
    await console.sql("INSERT INTO instance_volumes (instance_id, provider_volume_id, volume_type, size_bytes, slot,"
                      " is_boot, delete_on_terminate) VALUES (%(i)s, 'vol-boot', 'sbs_volume', 20000000000, '0',"
                      " true, true)", {"i": mine})
    rows = await console.page("/console/fleet/rows")
    assert mine in rows and failed in rows and operators in rows and theirs not in rows
    assert "1 (20 GB)" in rows
    only_failed = await console.page("/console/fleet/rows?status=failed")
    assert failed in only_failed and mine not in only_failed
    page = await console.page("/console/fleet?status=ready")
    assert 'data-refresh="/console/fleet/rows?status=ready"' in page
    async with console.client.get("/console/fleet?status=&model=", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/fleet"
    await console.page("/console/fleet/rows?status=nonsense", expect=400)


async def test_another_organizations_instance_is_not_found(console: Console) -> None:
    token = await console.sign_in()
    theirs = await _instance(console, console.other_org_id)
    await console.page(f"/console/instances/{theirs}", expect=404)
    await console.page(f"/console/instances/{theirs}/panel", expect=404)
    await console.post(f"/console/instances/{theirs}/terminate", {"csrf_token": token}, expect=404)
    assert (await console.sql("SELECT status FROM instances WHERE id = %(i)s", {"i": theirs}))[0][0] == "ready"
    await console.page("/console/instances/not-a-uuid", expect=400)


async def test_an_instance_page_shows_its_timeline_in_order_and_terminates(console: Console) -> None:
    token = await console.sign_in()
    mine = await _instance(console, console.org_id)
    for action, status, error in (("PROVIDER_CREATE", "success", None), ("HEALTH_CHECK", "failed", "timed out")):
        await console.sql("INSERT INTO action_logs (instance_id, action_type, component, status, duration_ms,"
                          " error_message, created_at) VALUES (%(i)s, %(a)s, 'scheduler', %(s)s, 42, %(e)s,"
                          " now() - make_interval(secs => %(n)s))",
                          {"i": mine, "a": action, "s": status, "e": error, "n": 10 if status == "success" else 5})
    page = await console.page(f"/console/instances/{mine}")
    assert page.index("PROVIDER_CREATE") < page.index("HEALTH_CHECK")
    assert "42 ms" in page and "timed out" in page
    _, location = await console.post(f"/console/instances/{mine}/terminate", {"csrf_token": token})
    assert location == f"/console/instances/{mine}"
    assert (await console.sql("SELECT status FROM instances WHERE id = %(i)s", {"i": mine}))[0][0] == "terminating"
    assert "REQUEST_TERMINATE" in await console.page(f"/console/instances/{mine}/panel")


async def _deploy_form(console: Console, token: str, **values: str) -> dict[str, str]:
    ids = dict(await console.sql("SELECT code, id::text FROM instance_types UNION ALL SELECT code, id::text FROM zones"
                                 " UNION ALL SELECT hf_repo_id, id::text FROM models"))
    form = {"csrf_token": token, "idempotency_key": "form-1", "instance_type_id": ids["MOCK-GPU-S"],
            "zone_id": ids["local-1"], "model_id": ids["Qwen/Qwen2.5-0.5B-Instruct"],
            "data_volume_delete_on_terminate": "on"}
    return {**form, **values}


async def test_the_deployment_form_puts_errors_beside_their_field(console: Console) -> None:
    token = await console.sign_in()
    text, _ = await console.post("/console/deploy", await _deploy_form(console, token, data_volume_gb="-3"),
                                 expect=400)
    assert re.search(r'id="error-data_volume_gb" role="alert">[^<]*data_volume_gb', text)
    text, _ = await console.post("/console/deploy", await _deploy_form(console, token, model_id=""), expect=400)
    assert 'id="error-model_id"' in text and 'id="error-data_volume_gb"' not in text
    assert (await console.sql("SELECT count(*) FROM instances"))[0][0] == 0


async def test_a_resubmitted_deployment_form_makes_one_instance(console: Console) -> None:
    token = await console.sign_in()
    form = await _deploy_form(console, token, data_volume_gb="10")
    _, first = await console.post("/console/deploy", form)
    _, again = await console.post("/console/deploy", form)
    assert first == again and re.fullmatch(r"/console/instances/[0-9a-f-]{36}", first)
    rows = await console.sql("SELECT data_volume_gb, data_volume_delete_on_terminate, organization_id::text"
                             " FROM instances")
    assert rows == [(10, True, console.org_id)]
    deploy_page = await console.page("/console/deploy")
    assert 'name="idempotency_key" value="form-1"' not in deploy_page


async def test_keys_are_created_shown_once_and_revoked(console: Console) -> None:
    token = await console.sign_in()
    text, _ = await console.post("/console/keys", {"name": "ci", "scopes": "inference", "csrf_token": token},
                                 expect=201)
    key = re.search(r'id="new-key">(ik_[^<]+)<', text)
    assert key is not None
    assert key.group(1) not in await console.page("/console/keys")
    (key_id,) = (await console.sql("SELECT id::text FROM api_keys WHERE name = 'ci'"))[0]
    await console.post(f"/console/keys/{key_id}/revoke", {"csrf_token": token})
    assert (await console.sql("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = %(i)s", {"i": key_id}))[0][0]
    theirs = await console.sql("INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, scopes) VALUES"
                               " (%(o)s, 'theirs', 'ik_x', repeat('a', 64), '{admin}') RETURNING id::text",
                               {"o": console.other_org_id})
    await console.post(f"/console/keys/{theirs[0][0]}/revoke", {"csrf_token": token}, expect=404)


async def _usage(console: Console, **values: Any) -> None:
    await console.sql(
        "INSERT INTO finops.inference_usage (request_id, created_at, organization_id, api_key_id, model, route,"
        " stream, status, prompt_tokens, completion_tokens, total_tokens) VALUES (md5(random()::text), now(),"
        " %(org)s, %(key)s, %(model)s, '/v1/chat/completions', false, 'success', 10, %(out)s, 10 + %(out)s)",
        {"org": console.org_id, "key": None, "model": "qwen-small", "out": 5, **values})


async def test_usage_charts_and_csv_per_model_key_and_day(console: Console) -> None:
    await console.sign_in()
    (key_id,) = (await console.sql("INSERT INTO api_keys (organization_id, name, key_prefix, key_hash, scopes)"
                                   " VALUES (%(o)s, 'app', 'ik_y', repeat('b', 64), '{inference}') RETURNING id::text",
                                   {"o": console.org_id}))[0]
    await _usage(console, key=key_id)
    await _usage(console, key=key_id, model="other-model", out=20)
    await console.sql("UPDATE finops.inference_usage SET organization_id = %(o)s WHERE model = 'other-model'",
                      {"o": console.other_org_id})
    await _usage(console)
    page = await console.page("/console/usage?days=7")
    assert "<strong>2</strong> requests" in page and "<strong>30</strong> tokens" in page
    assert page.count('<svg class="chart"') == 4 and "other-model" not in page
    assert "app: 15" in page  # the key's bar is titled with its name and its tokens
    csv = await console.page("/console/usage.csv?days=7&group_by=key")
    lines = sorted(csv.splitlines()[1:])
    assert csv.splitlines()[0] == ("api_key_id,api_key_name,requests,successful_requests,prompt_tokens,"
                                   "completion_tokens,total_tokens")
    assert lines == [",,1,1,10,5,15", f"{key_id},app,1,1,10,5,15"]
    day = datetime.now(UTC).date().isoformat()
    assert (await console.page("/console/usage.csv?group_by=day")).splitlines()[1] == f"{day},2,2,20,10,30"
    await console.page("/console/usage.csv?group_by=nope", expect=400)
    await console.page("/console/usage?days=5", expect=400)


async def test_static_files_are_versioned_and_cached_for_a_year(console: Console) -> None:
    async with console.client.get(static_url("console.js")) as resp:
        assert resp.status == 200 and "immutable" in resp.headers["Cache-Control"]
        assert resp.content_type == "text/javascript"
    await console.page(f"/console/static/{STATIC_VERSION}x/console.js", expect=404)
    await console.page(f"/console/static/{STATIC_VERSION}/nope.js", expect=404)
    sign_in = await console.page("/console/sign-in")
    assert static_url("console.css") in sign_in and "https://" not in sign_in


async def test_pages_are_never_cached_framed_or_allowed_other_origins(console: Console) -> None:
    async with console.client.get("/console/sign-in") as resp:
        headers = resp.headers
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
