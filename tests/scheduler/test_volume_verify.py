"""`inventiv volumes verify` against real clouds: the fake Scaleway through the real Scaleway provider, and
the mock cloud. Each instance is made ready by the scheduler itself, then one mismatch is made in the
cloud (through the provider, as an operator's console would) or in the database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from fake_scaleway import FakeScaleway, run_fake_scaleway
from fleet import point_provider_types_at
from memory_provider import serve_worker
from mock_cloud import reaping_mock_cloud

from inventiv.settings import Settings
from providers.base import GB, Provider, ServerSpec, Volume, VolumeState
from scheduler import sweep
from scheduler.cloud_check import Level
from scheduler.cloud_probe import check_clouds
from scheduler.failure import fail_instance
from scheduler.reconcile import reconcile_volumes
from scheduler.retry import StepFailed
from scheduler.runtime import ProviderSet, Runtime
from scheduler.volume_check import Kind
from scheduler.volume_verify import Report, UnknownInstance, orphans, verify_volumes

TAG = "inventiv"
DEAD = "33333333-3333-4333-8333-333333333333"


@dataclass
class Fleet:
    kind: str
    rt: Runtime
    zone: str
    instance_type: str
    model: str
    fake: FakeScaleway | None = None

    @property
    def provider(self) -> Provider:
        return self.rt.providers.get(self.kind)

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    def env(self) -> dict[str, str]:
        """The environment a `inventiv` process needs to see this fleet."""
        s = self.settings
        assert s.database_url is not None
        env = {"INVENTIV_DATABASE_URL": s.database_url, "INVENTIV_MOCK_CLOUD_DIR": str(s.mock_cloud_path)}
        if self.fake is not None:
            env.update(SCW_API_URL=self.fake.url, SCW_SECRET_KEY=self.fake.secret_key,
                       SCW_DEFAULT_PROJECT_ID=self.fake.project_id, INVENTIV_SCW_RETRY_BASE_S="0.001")  # fmt: skip
        return env


@pytest.fixture(params=["scaleway", "mock"])
async def fleet(
    request: pytest.FixtureRequest, fast_settings: Settings, db_pool: Any, redis: Any
) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        if request.param == "scaleway":
            fake = await stack.enter_async_context(run_fake_scaleway(polls_to_running=1, polls_to_gone=0))
            settings = fast_settings.replace(**fake.settings_changes())
            # Health checks reach an in-process worker: the Scaleway types' port is pointed at it.
            _, port = await stack.enter_async_context(serve_worker("Qwen/Qwen2.5-7B-Instruct"))
            await point_provider_types_at(db_pool, "scaleway", port)
            rt = Runtime(settings, db_pool, redis, ProviderSet(settings), aiohttp.ClientSession())
            stack.push_async_callback(rt.close)
            yield Fleet("scaleway", rt, "fr-par-2", "L40S-1-48G", "Qwen/Qwen2.5-7B-Instruct", fake)
        else:
            await stack.enter_async_context(reaping_mock_cloud(fast_settings.mock_cloud_path))
            rt = Runtime(fast_settings, db_pool, redis, ProviderSet(fast_settings), aiohttp.ClientSession())
            stack.push_async_callback(rt.close)
            yield Fleet("mock", rt, "local-1", "MOCK-GPU-S", "Qwen/Qwen2.5-0.5B-Instruct")


@pytest.fixture
def rt(fleet: Fleet) -> Runtime:
    """The scheduler fixtures (driver, drive) run on this fleet's cloud."""
    return fleet.rt


@pytest.fixture
def ready(fleet: Fleet, make_instance: Any, drive: Any) -> Any:
    async def make(**kw: Any) -> dict[str, Any]:
        instance_id = await make_instance(provider=fleet.kind, zone=fleet.zone, instance_type=fleet.instance_type,
                                          model=fleet.model, **kw)  # fmt: skip
        row: dict[str, Any] = await drive(instance_id, "ready", timeout_s=40)
        return row

    return make


async def verify(fleet: Fleet, instance_id: str | None = None, calls: Counter[str] | None = None) -> Report:
    """`calls`: counts the provider's get_volume and list_volumes calls."""
    providers = ProviderSet(fleet.settings)
    if calls is not None:
        count_calls(providers.get(fleet.kind), calls, "get_volume", "list_volumes")
    try:
        return await verify_volumes(fleet.rt.pool, providers, TAG, instance_id)
    finally:
        await providers.close()


def count_calls(provider: Provider, calls: Counter[str], *methods: str) -> None:
    for name in methods:
        method = getattr(provider, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            calls[_name] += 1
            return await _method(*args, **kw)

        setattr(provider, name, counted)


def kinds(report: Report) -> set[Kind]:
    return {f.kind for f in report.findings}


async def volume_ids(db: Any, instance_id: str) -> tuple[str, str]:
    """(boot volume, data volume) of the instance."""
    rows = await db.volumes(instance_id)
    boot = next(v["provider_volume_id"] for v in rows if v["is_boot"])
    data = next(v["provider_volume_id"] for v in rows if v["name"].endswith("-data"))
    return boot, data


async def set_row(db: Any, volume_id: str, assignment: str) -> None:
    async with db.pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE instance_volumes SET {assignment} WHERE provider_volume_id = %s", (volume_id,))


def finding(report: Report, kind: Kind) -> Any:
    [found] = [f for f in report.findings if f.kind is kind]
    return found


async def test_a_fleet_the_scheduler_made_verifies_clean(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    boot, data = await volume_ids(db, str(row["id"]))

    report = await verify(fleet)

    assert report.findings == [] and report.ok
    assert (report.instances, report.volumes) == (1, 2)
    assert [(c.subject_id, c.what) for c in report.checked] == [
        (row["provider_instance_id"], "server"), (boot, "boot"), (data, "data"),
    ]  # fmt: skip


async def test_server_missing(fleet: Fleet, ready: Any) -> None:
    row = await ready()
    await fleet.provider.terminate_server(fleet.zone, row["provider_instance_id"])
    assert await fleet.provider.get_server(fleet.zone, row["provider_instance_id"]) is None

    report = await verify(fleet)

    found = finding(report, Kind.SERVER_MISSING)
    assert (found.instance_id, found.volume_id) == (str(row["id"]), row["provider_instance_id"])


async def test_volume_missing(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    await fleet.provider.detach_volume(fleet.zone, row["provider_instance_id"], data)
    await fleet.provider.delete_volume(fleet.zone, data)

    report = await verify(fleet)

    assert kinds(report) == {Kind.VOLUME_MISSING} and finding(report, Kind.VOLUME_MISSING).volume_id == data


async def test_detached(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    await fleet.provider.detach_volume(fleet.zone, row["provider_instance_id"], data)

    report = await verify(fleet)

    assert kinds(report) == {Kind.DETACHED}
    assert finding(report, Kind.DETACHED).actual == "detached"


async def test_wrong_server(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    other = await fleet.provider.create_server(
        ServerSpec(name="operator-box", zone=fleet.zone, commercial_type=fleet.instance_type, tags=("operator",))
    )
    await fleet.provider.detach_volume(fleet.zone, row["provider_instance_id"], data)
    await fleet.provider.attach_volume(fleet.zone, other.id, data)

    report = await verify(fleet)

    assert kinds(report) == {Kind.WRONG_SERVER}
    assert finding(report, Kind.WRONG_SERVER).actual == f"attached to server {other.id}"


async def test_unexpected_attachment(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    await set_row(db, data, "detached_at = now()")

    assert kinds(await verify(fleet)) == {Kind.UNEXPECTED_ATTACHMENT}


async def test_size(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    await set_row(db, data, "size_bytes = 1000000000")

    report = await verify(fleet)

    assert kinds(report) == {Kind.SIZE}
    found = finding(report, Kind.SIZE)
    assert (found.volume_id, found.expected) == (data, "1 GB")


async def test_type(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    boot, _ = await volume_ids(db, str(row["id"]))
    await set_row(db, boot, "volume_type = 'l_ssd'")

    report = await verify(fleet)

    assert kinds(report) == {Kind.TYPE} and finding(report, Kind.TYPE).expected == "l_ssd"


async def test_state(fleet: Fleet, ready: Any, db: Any) -> None:
    if fleet.fake is None:
        pytest.skip("the mock cloud's volumes have no state of their own: in use or available, by attachment")
    row = await ready()
    _, data = await volume_ids(db, str(row["id"]))
    fleet.fake.volumes[data]["status"] = "error"

    report = await verify(fleet)

    assert kinds(report) == {Kind.STATE} and finding(report, Kind.STATE).actual == "error"


async def test_boot_flag(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready()
    boot, _ = await volume_ids(db, str(row["id"]))
    await set_row(db, boot, "is_boot = false")

    assert kinds(await verify(fleet)) == {Kind.BOOT_FLAG}


async def test_delete_on_terminate(fleet: Fleet, ready: Any, db: Any) -> None:
    row = await ready(delete_on_terminate=False)  # the data volume is kept: its row says so
    boot, _ = await volume_ids(db, str(row["id"]))
    await set_row(db, boot, "delete_on_terminate = false")

    report = await verify(fleet)

    assert kinds(report) == {Kind.DELETE_ON_TERMINATE}
    assert finding(report, Kind.DELETE_ON_TERMINATE).volume_id == boot


async def test_untracked(fleet: Fleet, ready: Any) -> None:
    row = await ready()
    extra = await fleet.provider.create_volume(fleet.zone, "by-hand", 5 * GB, ["operator"])
    await fleet.provider.attach_volume(fleet.zone, row["provider_instance_id"], extra.id)

    report = await verify(fleet)

    assert kinds(report) == {Kind.UNTRACKED} and finding(report, Kind.UNTRACKED).volume_id == extra.id


async def test_orphan(fleet: Fleet, ready: Any) -> None:
    await ready()
    leftover = await fleet.provider.create_volume(fleet.zone, "leftover", 5 * GB, [TAG, f"instance={DEAD}"])
    await fleet.provider.create_volume(fleet.zone, "someone-elses", 5 * GB, ["other", f"instance={DEAD}"])

    report = await verify(fleet)

    assert kinds(report) == {Kind.ORPHAN}
    found = finding(report, Kind.ORPHAN)
    assert (found.instance_id, found.volume_id) == (DEAD, leftover.id)


async def test_a_failed_instance_s_leftover_is_an_orphan_to_verify_the_cloud_check_and_the_sweep(
    fleet: Fleet, ready: Any, drive: Any
) -> None:
    # A failed instance whose cleanup finished keeps its status, deleted_at set: it is no longer live.
    row = await ready()
    instance_id = str(row["id"])
    await fail_instance(fleet.rt, instance_id, StepFailed("BY_HAND", "failed for the test"))
    row = await drive(instance_id, "failed", timeout_s=30)
    assert row["deleted_at"] is not None
    leftover = await fleet.provider.create_volume(fleet.zone, "leftover", 5 * GB, [TAG, f"instance={instance_id}"])

    report = await verify(fleet)
    assert [(f.kind, f.instance_id, f.volume_id) for f in report.findings] == [(Kind.ORPHAN, instance_id, leftover.id)]
    assert report.instances == 0

    providers = ProviderSet(fleet.settings)
    try:
        lines = await check_clouds(fleet.rt.pool, providers, fleet.settings)
    finally:
        await providers.close()
    tagged = next(line for line in lines if (line.provider, line.zone) == (fleet.kind, fleet.zone))
    assert tagged.level is Level.WARN and "0 servers and 1 volume belong to no live instance" in tagged.message

    fleet.rt.settings = fleet.settings.replace(orphan_grace_s=0, orphan_dry_run=True)
    swept = await sweep.sweep_orphans(fleet.rt)
    assert [r.id for r in swept if r.kind is sweep.Kind.VOLUME] == [leftover.id]


async def test_each_zone_is_listed_once_and_only_volumes_it_lacks_are_looked_up(fleet: Fleet, ready: Any) -> None:
    first, second = await ready(), await ready()
    # Attached by hand (no tag) and tracked by reconciliation: the tagged listing cannot have it.
    by_hand = await fleet.provider.create_volume(fleet.zone, "by-hand", 5 * GB, ["operator"])
    await fleet.provider.attach_volume(fleet.zone, first["provider_instance_id"], by_hand.id)
    assert await reconcile_volumes(fleet.rt) == 1
    calls: Counter[str] = Counter()

    report = await verify(fleet, calls=calls)

    assert report.ok and report.volumes == 5, report.findings
    assert calls == {"list_volumes": 1, "get_volume": 1}, "the four tagged volumes come from the listing"
    assert str(second["id"]) in {c.instance_id for c in report.checked}


async def test_a_live_instance_asked_for_lists_no_zone(fleet: Fleet, ready: Any) -> None:
    row = await ready()
    await fleet.provider.create_volume(fleet.zone, "leftover", 5 * GB, [TAG, f"instance={DEAD}"])
    calls: Counter[str] = Counter()

    report = await verify(fleet, str(row["id"]), calls=calls)

    assert report.ok and report.volumes == 2
    assert calls == {"get_volume": 2}, "no orphan can be a live instance's: nothing is listed"


async def test_an_unreachable_cloud_is_unchecked_not_clean(fleet: Fleet, ready: Any) -> None:
    if fleet.kind == "mock":
        pytest.skip("the mock cloud needs no credentials")
    row = await ready()
    providers = ProviderSet(fleet.settings.replace(scw_secret_key=None))

    report = await verify_volumes(fleet.rt.pool, providers, TAG)

    assert not report.ok and {(f.kind, f.instance_id) for f in report.findings} == {(Kind.UNCHECKED, str(row["id"]))}


async def test_the_instance_filter(fleet: Fleet, ready: Any, db: Any, terminate: Any, drive: Any) -> None:
    clean, broken, finished = await ready(), await ready(), await ready()
    _, data = await volume_ids(db, str(broken["id"]))
    await set_row(db, data, "size_bytes = 1000000000")
    await terminate(str(finished["id"]))
    await drive(str(finished["id"]), "terminated", timeout_s=30)
    leftover = await fleet.provider.create_volume(fleet.zone, "leftover", 5 * GB, [TAG, f"instance={finished['id']}"])
    elsewhere = await fleet.provider.create_volume(fleet.zone, "elsewhere", 5 * GB, [TAG, f"instance={DEAD}"])

    assert (await verify(fleet, str(clean["id"]))).ok
    only = await verify(fleet, str(broken["id"]))
    assert only.instances == 1 and {(f.kind, f.volume_id) for f in only.findings} == {(Kind.SIZE, data)}
    # A finished instance has nothing tracked to check; what is still tagged for it is an orphan.
    gone = await verify(fleet, str(finished["id"]))
    assert gone.instances == 0 and [(f.kind, f.volume_id) for f in gone.findings] == [(Kind.ORPHAN, leftover.id)]
    everything = await verify(fleet)
    assert everything.instances == 2
    assert {(f.kind, f.volume_id) for f in everything.findings} == {
        (Kind.SIZE, data), (Kind.ORPHAN, leftover.id), (Kind.ORPHAN, elsewhere.id),
    }  # fmt: skip


async def test_an_unknown_instance_id_is_refused(fleet: Fleet) -> None:
    with pytest.raises(UnknownInstance):
        await verify(fleet, str(uuid.uuid4()))


def _inventiv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("INVENTIV_", "SCW_"))}
    return subprocess.run([sys.executable, "-m", "inventiv", "--log-format", "json", *args],
                          env={**full_env, **env}, capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_the_command_exit_status_table_and_json(fleet: Fleet, ready: Any, db: Any) -> None:
    clean, broken = await ready(), await ready()
    env = fleet.env()

    ok = await asyncio.to_thread(_inventiv, env, "volumes", "verify")
    assert ok.returncode == 0, ok.stderr
    header, *rows, summary = ok.stdout.strip().splitlines()
    assert header.split() == ["INSTANCE", "VOLUME", "WHAT", "EXPECTED", "ACTUAL", "VERDICT"]
    assert len(rows) == 6 and all(r.endswith("ok") for r in rows)
    assert summary == "2 instances, 4 tracked volumes checked: everything matches"

    _, data = await volume_ids(db, str(broken["id"]))
    await set_row(db, data, "size_bytes = 1000000000")
    bad = await asyncio.to_thread(_inventiv, env, "volumes", "verify")
    assert bad.returncode == 1, bad.stderr
    [mismatch] = [line for line in bad.stdout.splitlines() if line.endswith("MISMATCH")]
    assert mismatch.split()[:3] == [str(broken["id"])[:8], data[:8], "data"]
    assert bad.stdout.strip().endswith("2 instances, 4 tracked volumes checked: 1 mismatch (1 size)")

    as_json = await asyncio.to_thread(_inventiv, env, "volumes", "verify", "--json")
    assert as_json.returncode == 1
    parsed = json.loads(as_json.stdout)
    assert parsed["ok"] is False and (parsed["instances"], parsed["volumes"]) == (2, 4)
    assert parsed["findings"] == [{
        "kind": "size", "instance_id": str(broken["id"]), "volume_id": data, "what": "data size",
        "expected": "1 GB", "actual": parsed["findings"][0]["actual"], "verdict": "MISMATCH",
    }]  # fmt: skip

    filtered = await asyncio.to_thread(_inventiv, env, "volumes", "verify", "--instance", str(clean["id"]), "--json")
    assert filtered.returncode == 0 and json.loads(filtered.stdout)["findings"] == []

    for wrong in ("not-an-id", str(uuid.uuid4())):
        refused = await asyncio.to_thread(_inventiv, env, "volumes", "verify", "--instance", wrong)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert refused.stderr.startswith("inventiv: error: ")


LIVE = "11111111-1111-4111-8111-111111111111"


def tagged_volume(volume_id: str, *tags: str, server: str | None = None) -> Volume:
    state = VolumeState.IN_USE if server else VolumeState.AVAILABLE
    return Volume(volume_id, volume_id, "z", "sbs_5k", GB, state, tags, server, datetime.now(UTC))


@pytest.mark.parametrize(
    ("volume", "owner", "actual"),
    [
        (tagged_volume("v", TAG, f"instance={DEAD}"), DEAD, f"tagged for instance {DEAD}, which has no live row"),
        (tagged_volume("v", TAG), None, "tagged for no instance"),
        (tagged_volume("v", TAG, server="srv-9"), None, "tagged for no instance; attached to server srv-9"),
        (tagged_volume("v", TAG, f"instance={LIVE}"), "live", ""),  # its instance is live
        (tagged_volume("kept", TAG, f"instance={DEAD}"), "live", ""),  # tracked, or kept on purpose
        (tagged_volume("v", "other", f"instance={DEAD}"), "live", ""),  # another deployment's
    ],
)  # fmt: skip
def test_orphans_are_the_sweep_s_with_no_grace_period(volume: Volume, owner: str | None, actual: str) -> None:
    owned = sweep.Ownership(live_instance_ids=frozenset({LIVE}), protected_ids=frozenset({"kept"}))
    found = orphans([volume], deployment_tag=TAG, owned=owned)
    if owner == "live":
        assert found == []
    else:
        [finding] = found
        assert (finding.kind, finding.instance_id, finding.volume_id, finding.actual) == (
            Kind.ORPHAN, owner, volume.id, actual
        )  # fmt: skip
