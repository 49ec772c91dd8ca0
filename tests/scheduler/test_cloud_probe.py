"""`inventiv cloud check` against the fake Scaleway (through the real Scaleway provider) and the mock cloud."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from mock_cloud import open_mock_cloud

from inventiv.settings import Settings
from providers.base import GB, ServerSpec
from providers.mock.cloud import MockCloud
from providers.registry import create_provider
from scheduler.cloud_check import Level, Line, exit_status, render
from scheduler.cloud_probe import check_clouds
from scheduler.runtime import ProviderSet
from scheduler.sweep import Ownership, ownership

TAG = "inventiv"
DEAD = "33333333-3333-4333-8333-333333333333"
SCW_ZONES = ("fr-par-1", "fr-par-2", "nl-ams-1")


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway() as running:
        yield running


@pytest.fixture
def scw_settings(settings: Settings, fake: FakeScaleway) -> Settings:
    return settings.replace(**fake.settings_changes())


async def check(pool: Any, settings: Settings) -> list[Line]:
    providers = ProviderSet(settings)
    try:
        lines = await check_clouds(pool, providers, settings)
    finally:
        await providers.close()
    print(render(lines))  # what an operator would read, shown when a test fails
    return lines


def of(lines: list[Line], provider: str, zone: str | None = None) -> list[tuple[Level, str]]:
    return [(line.level, line.message) for line in lines if line.provider == provider and zone in (None, line.zone)]


async def test_a_healthy_scaleway_project(db_pool: Any, scw_settings: Settings) -> None:
    lines = await check(db_pool, scw_settings)

    assert of(lines, "scaleway", "-") == [(Level.OK, "credentials valid (project 105bdce1... reachable)")]
    for zone in SCW_ZONES:
        found = of(lines, "scaleway", zone)
        assert found[0] == (Level.OK, "0 servers and 0 volumes tagged inventiv, all of live instances")
        assert found[1][0] is Level.OK and found[1][1].startswith("in stock: ")
        assert all(level is not Level.FAIL for level, _ in found)
    # The mock cloud was never used here: no state folder, no instance, so no failure.
    [(level, message)] = of(lines, "mock")
    assert level is Level.SKIP and message.startswith("not configured: no state folder ")
    assert exit_status(lines) == 0


async def test_a_rejected_key_is_one_line_naming_the_setting(db_pool: Any, scw_settings: Settings) -> None:
    lines = await check(db_pool, scw_settings.replace(scw_secret_key="wrong"))

    assert of(lines, "scaleway") == [(Level.FAIL, "credentials rejected (401): check SCW_SECRET_KEY")]
    assert exit_status(lines) == 1


async def test_a_shortage_fails_and_scarce_stock_warns(
    db_pool: Any, scw_settings: Settings, fake: FakeScaleway
) -> None:
    fake.availability.update({"H100-1-80G": "shortage", "L4-1-24G": "scarce"})

    lines = await check(db_pool, scw_settings)

    found = of(lines, "scaleway", "fr-par-2")
    assert (Level.FAIL, "H100-1-80G: out of stock (shortage)") in found
    assert (Level.WARN, "L4-1-24G: stock is scarce") in found
    assert exit_status(lines) == 1


async def test_tagged_resources_are_counted_and_those_of_no_live_instance_told_apart(
    db_pool: Any, scw_settings: Settings, make_instance: Any
) -> None:
    live = await make_instance(provider="scaleway", zone="fr-par-2", instance_type="L40S-1-48G")
    provider = create_provider("scaleway", scw_settings)
    try:
        for owner in (live, DEAD):
            spec = ServerSpec(name=f"srv-{owner[:4]}", zone="fr-par-2", commercial_type="L40S-1-48G",
                              tags=(TAG, f"instance={owner}"))  # fmt: skip
            await provider.create_server(spec)
            await provider.create_volume("fr-par-2", f"vol-{owner[:4]}", 5 * GB, [TAG, f"instance={owner}"])
        await provider.create_volume("fr-par-2", "someone-elses", 5 * GB, ["other"])
    finally:
        await provider.close()

    lines = await check(db_pool, scw_settings)

    assert of(lines, "scaleway", "fr-par-2")[0] == (
        Level.WARN, "2 servers and 2 volumes tagged inventiv; 1 server and 1 volume belong to no live instance "
                    "(the orphan sweep deletes them after INVENTIV_ORPHAN_GRACE_S)",
    )  # fmt: skip
    assert exit_status(lines) == 0, "the sweep deals with them: worth a look, not a failure"


async def test_ownership_is_read_once_after_every_zone_was_listed(
    db_pool: Any, scw_settings: Settings, fake: FakeScaleway, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed_before: list[int] = []

    async def counted(pool: Any) -> Ownership:
        listed_before.append(
            len({path for method, path in fake.requests if method == "GET" and path.endswith("/volumes")})
        )
        return await ownership(pool)

    monkeypatch.setattr("scheduler.cloud_probe.ownership", counted)

    lines = await check(db_pool, scw_settings)

    assert {line.zone for line in lines if line.provider == "scaleway"} == {"-", *SCW_ZONES}
    assert listed_before == [len(SCW_ZONES)], "one read, once every zone's volumes were listed"


async def test_an_unconfigured_provider_fails_only_when_live_instances_use_it(
    db_pool: Any, settings: Settings, make_instance: Any
) -> None:
    lines = await check(db_pool, settings)
    [(level, message)] = of(lines, "scaleway")
    assert level is Level.SKIP
    assert message == ("not configured: the scaleway provider needs SCW_SECRET_KEY and SCW_DEFAULT_PROJECT_ID "
                       "(or SCW_SECRET_KEY_FILE) in the environment; no live instance uses it")  # fmt: skip
    assert exit_status(lines) == 0

    await make_instance(provider="scaleway", zone="fr-par-2", instance_type="L40S-1-48G")
    lines = await check(db_pool, settings)
    [(level, message)] = of(lines, "scaleway")
    assert level is Level.FAIL and message.endswith("; 1 live instance uses it")
    assert exit_status(lines) == 1


async def test_an_inactive_zone_is_checked_only_where_a_server_was_asked_for(
    db_pool: Any, scw_settings: Settings, make_instance: Any, db: Any
) -> None:
    instance_id = await make_instance(provider="scaleway", zone="nl-ams-1", instance_type="L40S-1-48G")
    await db.rows("UPDATE zones SET is_active = false WHERE code IN ('nl-ams-1', 'fr-par-1') RETURNING id")

    lines = await check(db_pool, scw_settings)
    assert {line.zone for line in lines if line.provider == "scaleway"} == {"-", "fr-par-2"}

    await db.rows("UPDATE instances SET create_requested_at = now() WHERE id = %s RETURNING id", instance_id)
    lines = await check(db_pool, scw_settings)
    assert {line.zone for line in lines if line.provider == "scaleway"} == {"-", "fr-par-2", "nl-ams-1"}
    # Nothing is offered in an inactive zone: its tagged resources are checked, not its stock.
    assert [level for level, _ in of(lines, "scaleway", "nl-ams-1")] == [Level.OK]


@pytest.fixture
async def mock_cloud(settings: Settings) -> AsyncIterator[MockCloud]:
    async with open_mock_cloud(settings.mock_cloud_path) as cloud:
        await cloud.clear_faults()  # makes the state folder, as a first server would
        yield cloud


async def test_the_mock_cloud(db_pool: Any, settings: Settings, mock_cloud: MockCloud) -> None:
    await mock_cloud.set_out_of_stock("MOCK-GPU-M")
    await mock_cloud.create_volume("local-1", "leftover", 5 * GB, [TAG, f"instance={DEAD}"])

    lines = await check(db_pool, settings)

    assert of(lines, "mock") == [
        (Level.OK, f"state folder {settings.mock_cloud_path} readable"),
        (Level.WARN, "0 servers and 1 volume tagged inventiv; 0 servers and 1 volume belong to no live instance "
                     "(the orphan sweep deletes them after INVENTIV_ORPHAN_GRACE_S)"),
        (Level.OK, "in stock: MOCK-GPU-S"),
        (Level.FAIL, "MOCK-GPU-M: out of stock (shortage)"),
    ]  # fmt: skip
    assert exit_status(lines) == 1


async def test_an_unreadable_mock_state_fails_its_zone(db_pool: Any, settings: Settings, mock_cloud: MockCloud) -> None:
    state = settings.mock_cloud_path / "state.json"
    state.write_text("{not json")
    try:
        lines = await check(db_pool, settings)
    finally:
        state.unlink()

    [(level, message)] = of(lines, "mock")
    assert level is Level.FAIL and message.startswith("cannot be read: Expecting property name")
    assert message.endswith(f"({settings.mock_cloud_path})")
    assert [line.zone for line in lines if line.provider == "mock"] == ["local-1"]


def _inventiv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INVENTIV_", "SCW_"))}
    return subprocess.run([sys.executable, "-m", "inventiv", "--log-format", "json", *args],
                          env={**base, **env}, capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_the_command(db_pool: Any, scw_settings: Settings, fake: FakeScaleway) -> None:
    assert scw_settings.database_url is not None
    env = {"INVENTIV_DATABASE_URL": scw_settings.database_url, "SCW_API_URL": fake.url,
           "SCW_SECRET_KEY": fake.secret_key, "SCW_DEFAULT_PROJECT_ID": fake.project_id,
           "INVENTIV_MOCK_CLOUD_DIR": str(scw_settings.mock_cloud_path)}  # fmt: skip

    ok = await asyncio.to_thread(_inventiv, env, "cloud", "check")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].split() == ["skip", "mock", "-", "not", "configured:", "no", "state", "folder",
                                                 str(scw_settings.mock_cloud_path), "(INVENTIV_MOCK_CLOUD_DIR;", "made",
                                                 "by", "the", "first", "mock", "server);", "no", "live", "instance",
                                                 "uses", "it"]  # fmt: skip
    assert "ok   scaleway -         credentials valid (project 105bdce1... reachable)" in ok.stdout.splitlines()

    fake.availability["H100-1-80G"] = "shortage"
    failed = await asyncio.to_thread(_inventiv, env, "cloud", "check", "--json")
    assert failed.returncode == 1, failed.stderr
    parsed = json.loads(failed.stdout)
    assert parsed["ok"] is False
    assert {"level": "FAIL", "provider": "scaleway", "zone": "fr-par-2",
            "message": "H100-1-80G: out of stock (shortage)"} in parsed["checks"]  # fmt: skip

    refused = await asyncio.to_thread(_inventiv, {**env, "SCW_SECRET_KEY": "wrong"}, "cloud", "check")
    assert refused.returncode == 1
    assert "FAIL scaleway -  credentials rejected (401): check SCW_SECRET_KEY" in refused.stdout.splitlines()

    bad_setting = await asyncio.to_thread(_inventiv, {**env, "INVENTIV_SCW_WORKER_ALLOWED_CIDRS": "0.0.0.0/0"},
                                          "cloud", "check")  # fmt: skip
    assert bad_setting.returncode == 2 and bad_setting.stderr.startswith("inventiv: error: INVENTIV_SCW_WORKER")
