"""The Scaleway provider end to end against the fake Scaleway API."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import yaml
from fake_scaleway import FakeScaleway, run_fake_scaleway
from scaleway_bodies import GPU_IMAGE_ID, GPU_IMAGE_LABEL

from inventiv.settings import Settings
from inventiv.worker_secrets import worker_secrets
from providers.base import (
    GB,
    AuthError,
    Availability,
    InvalidRequest,
    NotFound,
    NotReady,
    OutOfStock,
    QuotaExceeded,
    Server,
    ServerSpec,
    ServerState,
    TransientError,
    VolumeState,
)
from providers.registry import create_provider
from providers.scaleway.provider import ScalewayProvider

ZONE = "fr-par-2"
TAGS = ("inventiv", "instance=11111111-2222-3333-4444-555555555555")


@pytest.fixture
async def fake() -> AsyncIterator[FakeScaleway]:
    async with run_fake_scaleway(polls_to_running=2, polls_to_gone=1) as running:
        yield running


KEYED = Settings(worker_secret_key="provider-tests-worker-secret-key-0123456789")
INSTANCE = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
async def provider(fake: FakeScaleway) -> AsyncIterator[ScalewayProvider]:
    made = create_provider("scaleway", KEYED.replace(**fake.settings_changes()))
    assert isinstance(made, ScalewayProvider)
    yield made
    await made.close()


def spec(name: str = "inventiv-1", commercial_type: str = "L40S-1-48G", image: str | None = GPU_IMAGE_ID) -> ServerSpec:
    return ServerSpec(name=name, zone=ZONE, commercial_type=commercial_type, tags=TAGS, image=image)


async def until(provider: ScalewayProvider, server_id: str, state: ServerState) -> Server:
    for _ in range(20):
        server = await provider.get_server(ZONE, server_id)
        assert server is not None
        if server.state is state:
            return server
    raise AssertionError(f"server {server_id} never reached {state}")


async def until_gone(provider: ScalewayProvider, server_id: str) -> None:
    for _ in range(20):
        if await provider.get_server(ZONE, server_id) is None:
            return
    raise AssertionError(f"server {server_id} never went away")


async def running_server(provider: ScalewayProvider) -> Server:
    server = await provider.create_server(spec())
    await provider.power_on(ZONE, server.id)
    return await until(provider, server.id, ServerState.RUNNING)


async def test_create_power_on_and_run(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await provider.create_server(spec())
    assert server.state is ServerState.STOPPED and server.tags == TAGS
    [boot] = server.volumes
    assert (boot.slot, boot.volume_type, boot.size_bytes) == ("0", "sbs_volume", None)
    body = next(iter(fake.servers.values()))
    assert body["image"]["id"] == GPU_IMAGE_ID and body["dynamic_ip_required"] is True
    assert body["project"] == fake.project_id

    await provider.power_on(ZONE, server.id)
    starting = await provider.get_server(ZONE, server.id)
    assert starting is not None and starting.state is ServerState.STARTING and starting.ip_address is None
    running = await until(provider, server.id, ServerState.RUNNING)
    assert running.ip_address == "127.0.0.1" and "terminate" in running.allowed_actions
    await provider.power_on(ZONE, server.id)  # a repeated poweron of a running server is done


async def test_server_volumes_get_their_size_from_the_block_api(provider: ScalewayProvider) -> None:
    server = await provider.create_server(ServerSpec(
        name="big-root", zone=ZONE, commercial_type="L4-1-24G", tags=TAGS, image=GPU_IMAGE_ID,
        root_volume_bytes=50 * GB))
    [boot] = await provider.list_server_volumes(ZONE, server.id)
    assert (boot.slot, boot.size_bytes, boot.name) == ("0", 50 * GB, "Ubuntu Jammy GPU OS 12 passthrough_sbs_volume_0")
    with pytest.raises(NotFound):
        await provider.list_server_volumes(ZONE, "00000000-0000-0000-0000-000000000000")


async def test_boot_volume_is_untagged_until_tagged(provider: ScalewayProvider) -> None:
    server = await provider.create_server(spec())
    boot_id = server.volumes[0].id
    assert await provider.list_volumes(ZONE, ["inventiv"]) == []
    await provider.set_volume_tags(ZONE, boot_id, [*TAGS, "boot"])
    [tagged] = await provider.list_volumes(ZONE, ["inventiv"])
    assert (tagged.id, tagged.tags, tagged.state, tagged.server_id) == (
        boot_id, (*TAGS, "boot"), VolumeState.IN_USE, server.id)
    with pytest.raises(NotFound):
        await provider.set_volume_tags(ZONE, "00000000-0000-0000-0000-000000000000", [])


async def test_data_volume_create_attach_detach_delete(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await running_server(provider)
    volume = await provider.create_volume(ZONE, "inventiv-data", 200 * GB, TAGS)
    assert (volume.size_bytes, volume.state, volume.volume_type, volume.tags) == (
        200 * GB, VolumeState.AVAILABLE, "sbs_5k", TAGS)
    assert fake.volumes[volume.id]["project_id"] == fake.project_id

    await asyncio.gather(provider.attach_volume(ZONE, server.id, volume.id),
                         provider.attach_volume(ZONE, server.id, volume.id))  # serialised: one attach
    attached = await provider.list_server_volumes(ZONE, server.id)
    assert [(v.slot, v.size_bytes) for v in attached] == [("0", 20 * GB), ("1", 200 * GB)]
    with pytest.raises(TransientError, match="detached"):
        await provider.delete_volume(ZONE, volume.id)

    await provider.detach_volume(ZONE, server.id, volume.id)
    await provider.detach_volume(ZONE, server.id, volume.id)  # already detached: done
    assert [v.slot for v in await provider.list_server_volumes(ZONE, server.id)] == ["0"]
    await provider.delete_volume(ZONE, volume.id)
    await provider.delete_volume(ZONE, volume.id)  # gone: done
    assert await provider.get_volume(ZONE, volume.id) is None
    with pytest.raises(NotFound):
        await provider.attach_volume(ZONE, server.id, volume.id)


async def test_a_volume_still_being_created_is_waited_for_before_the_attach(
    provider: ScalewayProvider, fake: FakeScaleway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("providers.scaleway.provider._ATTACH_READY_POLL_S", 0.01)
    server = await provider.create_server(spec())
    fake.polls_to_available = 3
    volume = await provider.create_volume(ZONE, "data", 10 * GB, TAGS)
    assert fake.volumes[volume.id]["status"] == "creating"

    await provider.attach_volume(ZONE, server.id, volume.id)

    assert fake.volumes[volume.id]["status"] == "in_use"
    fake.polls_to_available = 100
    slow = await provider.create_volume(ZONE, "slow", 10 * GB, TAGS)
    with pytest.raises(NotReady):
        await provider.attach_volume(ZONE, server.id, slow.id)


async def test_a_volume_of_another_server_is_refused(provider: ScalewayProvider) -> None:
    first = await provider.create_server(spec("a"))
    second = await provider.create_server(spec("b"))
    volume = await provider.create_volume(ZONE, "data", 10 * GB, [])
    await provider.attach_volume(ZONE, first.id, volume.id)
    with pytest.raises(InvalidRequest, match="attached to server"):
        await provider.attach_volume(ZONE, second.id, volume.id)
    with pytest.raises(InvalidRequest, match="attached to server"):
        await provider.detach_volume(ZONE, second.id, volume.id)


async def test_terminate_running_leaves_sbs_volumes_detached(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await running_server(provider)
    data = await provider.create_volume(ZONE, "data", 200 * GB, TAGS)
    await provider.attach_volume(ZONE, server.id, data.id)
    scratch = fake.add_scratch_volume(server.id)
    await provider.terminate_server(ZONE, server.id)
    stopping = await provider.get_server(ZONE, server.id)
    assert stopping is not None and stopping.state is ServerState.STOPPING
    await provider.terminate_server(ZONE, server.id)  # already terminating: it will go away, wait
    await until_gone(provider, server.id)
    await provider.terminate_server(ZONE, server.id)  # gone: done

    assert scratch["id"] not in fake.local_volumes
    left = {v.id: v for v in await provider.list_volumes(ZONE, [])}
    assert set(left) == {server.volumes[0].id, data.id}
    assert all(v.state is VolumeState.AVAILABLE and v.server_id is None for v in left.values())
    for volume_id in left:
        await provider.delete_volume(ZONE, volume_id)
    assert fake.servers == {} and fake.volumes == {}


async def test_delete_of_a_stopped_server_leaves_every_volume(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await provider.create_server(spec())
    scratch = fake.add_scratch_volume(server.id)
    await provider.terminate_server(ZONE, server.id)
    assert await provider.get_server(ZONE, server.id) is None
    assert ("DELETE", f"/instance/v1/zones/{ZONE}/servers/{server.id}") in fake.requests
    [boot] = await provider.list_volumes(ZONE, [])
    assert boot.state is VolumeState.AVAILABLE
    local = await provider.get_volume(ZONE, scratch["id"])
    assert local is not None and (local.volume_type, local.state) == ("scratch", VolumeState.AVAILABLE)
    await provider.delete_volume(ZONE, boot.id)
    await provider.delete_volume(ZONE, scratch["id"])  # through the Instance API
    assert fake.volumes == {} and fake.local_volumes == {}


async def test_terminate_waits_while_starting(provider: ScalewayProvider) -> None:
    server = await provider.create_server(spec())
    await provider.power_on(ZONE, server.id)
    with pytest.raises(TransientError, match="starting"):
        await provider.terminate_server(ZONE, server.id)


async def test_listing_by_tags_matches_all(provider: ScalewayProvider) -> None:
    first = await provider.create_server(spec("a"))
    await provider.create_server(ServerSpec(name="other", zone=ZONE, commercial_type="L4-1-24G", tags=("other",),
                                            image=GPU_IMAGE_ID))
    assert [s.id for s in await provider.list_servers(ZONE, list(TAGS))] == [first.id]
    assert len(await provider.list_servers(ZONE, [])) == 2
    assert await provider.list_servers("nl-ams-1", []) == []


async def test_many_servers_are_listed_across_pages(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    await asyncio.gather(*(provider.create_server(spec(f"s{i}", "L4-1-24G")) for i in range(105)))
    assert len(await provider.list_servers(ZONE, ["inventiv"])) == 105
    volumes = await provider.list_volumes(ZONE, [])
    assert len(volumes) == 105
    assert sum(1 for _, path in fake.requests if path == f"/block/v1/zones/{ZONE}/volumes") == 2


async def test_faults_become_typed_errors(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    fake.create_errors["L40S-2-48G"] = "out_of_stock"
    with pytest.raises(OutOfStock):
        await provider.create_server(spec(commercial_type="L40S-2-48G"))
    fake.create_errors["L40S-2-48G"] = "quota"
    with pytest.raises(QuotaExceeded):
        await provider.create_server(spec(commercial_type="L40S-2-48G"))
    fake.volume_create_error = "quota"
    with pytest.raises(QuotaExceeded):
        await provider.create_volume(ZONE, "data", 10 * GB, [])
    server = await provider.create_server(spec("refused"))
    fake.refuse_poweron.add("refused")
    with pytest.raises(OutOfStock):
        await provider.power_on(ZONE, server.id)
    assert (await provider.get_server(ZONE, server.id)).state is ServerState.STOPPED  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest):
        await provider.create_server(spec(commercial_type="GPU-9000"))
    with pytest.raises(InvalidRequest, match="not compatible"):
        await provider.create_server(spec(commercial_type="PRO2-XXS"))


async def test_random_server_errors_are_retried(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await provider.create_server(spec())
    volume = await provider.create_volume(ZONE, "data", 10 * GB, TAGS)
    fake.error_rate, fake.rng = 0.2, random.Random(1)
    await provider.power_on(ZONE, server.id)
    await until(provider, server.id, ServerState.RUNNING)
    await provider.attach_volume(ZONE, server.id, volume.id)
    assert len(await provider.list_server_volumes(ZONE, server.id)) == 2
    await provider.terminate_server(ZONE, server.id)
    await until_gone(provider, server.id)
    for left in await provider.list_volumes(ZONE, []):
        await provider.delete_volume(ZONE, left.id)
    assert fake.injected_errors > 0
    assert fake.servers == {} and fake.volumes == {}


LOSSY = ("/attach-volume", "/detach-volume", "/action")


async def test_lost_replies_of_attach_detach_and_terminate_count_as_done(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    server = await running_server(provider)
    volume = await provider.create_volume(ZONE, "data", 10 * GB, TAGS)
    # Every reply of these calls is lost after the change is made; the retry meets the changed state.
    fake.error_after_rate, fake.fault_paths, fake.polls_to_gone = 1.0, LOSSY, 3
    start = len(fake.requests)

    await provider.attach_volume(ZONE, server.id, volume.id)
    assert [v.id for v in await provider.list_server_volumes(ZONE, server.id)] == [server.volumes[0].id, volume.id]
    await provider.detach_volume(ZONE, server.id, volume.id)
    assert (await provider.get_volume(ZONE, volume.id)).server_id is None  # type: ignore[union-attr]
    await provider.terminate_server(ZONE, server.id)
    assert fake.servers[server.id]["state_detail"] == "terminating"

    base = f"/instance/v1/zones/{ZONE}/servers/{server.id}"
    tries = [p for m, p in fake.requests[start:] if m == "POST" and p.startswith(base)]
    assert tries == [f"{base}/attach-volume"] * 2 + [f"{base}/detach-volume"] * 2 + [f"{base}/action"] * 2
    assert fake.injected_errors == 3
    await until_gone(provider, server.id)


async def test_a_retried_terminate_that_finds_the_server_gone_is_done(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    server = await running_server(provider)
    fake.error_after_rate, fake.fault_paths, fake.polls_to_gone = 1.0, LOSSY, 1
    await provider.terminate_server(ZONE, server.id)
    assert fake.servers == {}


async def test_random_lost_replies_never_fail_attach_detach_or_terminate(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    servers = [await running_server(provider) for _ in range(3)]
    volumes = [await provider.create_volume(ZONE, f"data-{i}", 10 * GB, TAGS) for i in range(6)]
    fake.error_after_rate, fake.fault_paths, fake.rng = 0.5, LOSSY, random.Random(3)
    for i, volume in enumerate(volumes):
        await provider.attach_volume(ZONE, servers[i % 3].id, volume.id)
    for i, volume in enumerate(volumes[:3]):
        await provider.detach_volume(ZONE, servers[i % 3].id, volume.id)
    for server in servers:
        await provider.terminate_server(ZONE, server.id)
        await until_gone(provider, server.id)
    assert fake.injected_errors >= 3, "some replies were lost"
    left = await provider.list_volumes(ZONE, [])
    assert {v.id for v in volumes} <= {v.id for v in left}
    assert all(v.server_id is None for v in left)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_failed_create_is_retried_and_a_lost_reply_adopts_what_it_made(
    provider: ScalewayProvider, fake: FakeScaleway, when: str
) -> None:
    # One create of each kind fails: refused outright ("before") or carried out with its reply lost ("after").
    fake.fault_methods, fake.fault_paths, fake.faults_left = ("POST",), ("/servers", "/volumes"), 2
    if when == "before":
        fake.error_rate = 1.0
    else:
        fake.error_after_rate = 1.0

    server = await provider.create_server(spec())
    volume = await provider.create_volume(ZONE, "data", 10 * GB, TAGS)

    assert list(fake.servers) == [server.id] and server.name == "inventiv-1"
    assert [v for v in fake.volumes if v == volume.id] == [volume.id] and volume.name == "data"
    assert len(fake.volumes) == 2, "the server's root and one data volume: nothing created twice"
    posts = [p for m, p in fake.requests if m == "POST" and p.endswith(("/servers", "/volumes"))]
    assert len(posts) == (4 if when == "before" else 2), "a lost reply is adopted, not created again"
    assert fake.injected_errors == 2


async def test_a_create_that_keeps_failing_gives_up_with_a_transient_error(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    fake.fault_methods, fake.fault_paths, fake.error_rate = ("POST",), ("/servers",), 1.0
    with pytest.raises(TransientError):
        await provider.create_server(spec())
    assert fake.servers == {}
    posts = [p for m, p in fake.requests if m == "POST" and p.endswith("/servers")]
    assert len(posts) == provider.client.attempts, "one retry budget, each retry after a look for the server"


async def test_a_wrong_key_is_an_auth_error(fake: FakeScaleway) -> None:
    settings = Settings().replace(**{**fake.settings_changes(), "scw_secret_key": "wrong"})
    provider = create_provider("scaleway", settings)
    try:
        with pytest.raises(AuthError, match="denied_authentication"):
            await provider.list_servers(ZONE, [])
    finally:
        await provider.close()


async def test_catalog(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    assert await provider.needs_boot_image(ZONE, "L40S-1-48G") is True
    assert await provider.needs_boot_image(ZONE, "RENDER-S") is False
    assert await provider.resolve_boot_image(ZONE, "L40S-1-48G", [GPU_IMAGE_LABEL]) == GPU_IMAGE_ID
    assert await provider.resolve_boot_image(ZONE, "L40S-1-48G", ["ubuntu_noble"]) is None
    fake.availability["L40S-1-48G"] = "shortage"
    stock = await provider.availability(ZONE)
    assert len(stock) == len(fake.products)
    assert stock["L40S-1-48G"] is Availability.SHORTAGE and stock["L4-1-24G"] is Availability.AVAILABLE


async def test_create_without_image_resolves_the_default(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    await provider.create_server(spec(image=None))
    assert next(iter(fake.servers.values()))["image"]["id"] == GPU_IMAGE_ID
    fake.images.clear()
    with pytest.raises(InvalidRequest, match="no boot image for H100-1-80G") as caught:
        await provider.create_server(spec(commercial_type="H100-1-80G", image=None))
    assert caught.value.code == "SCW_DISKLESS_BOOT_IMAGE_REQUIRED"


# -- worker boot: cloud-init user data -------------------------------------------------------------------

MODEL = "Qwen/Qwen2.5-7B-Instruct"
SECRET = worker_secrets(KEYED).for_instance(INSTANCE)


def model_spec(name: str = "inventiv-1", model: str = MODEL, engine: str = "vllm") -> ServerSpec:
    return ServerSpec(name=name, zone=ZONE, commercial_type="L40S-1-48G", tags=TAGS, image=GPU_IMAGE_ID,
                      model=model, engine=engine, worker_secret=SECRET)  # fmt: skip


def root_only_files(cloud_init: str) -> dict[str, str]:
    """The user data's files with mode 0600, by path: where the secrets must be, and only there."""
    entries = yaml.safe_load(cloud_init)["write_files"]
    return {e["path"]: e["content"] for e in entries if e["permissions"] == "0600" and e["owner"] == "root:root"}


def user_data_calls(fake: FakeScaleway, server_id: str) -> list[str]:
    """The calls that wrote user data or powered on this server, in order."""
    base = f"/instance/v1/zones/{ZONE}/servers/{server_id}"
    return [f"{m} {p[len(base):]}" for m, p in fake.requests if p.startswith(f"{base}/") and m in ("PATCH", "POST")]


async def test_a_server_for_a_model_boots_with_its_cloud_init(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await provider.create_server(model_spec())

    assert server.state is ServerState.STOPPED and server.tags == (*TAGS, f"model={MODEL}", "engine=vllm")
    cloud_init = fake.user_data[server.id]["cloud-init"]
    assert cloud_init.startswith("#cloud-config\n") and f"MODEL={MODEL}\n" in cloud_init
    assert "HOST_PORT=8000\n" in cloud_init and f"IMAGE={Settings.vllm_image}\n" in cloud_init
    # The engine's API key in the root-only env file (Scaleway serves user data on the box to root only).
    [worker_env] = root_only_files(cloud_init).values()
    assert f"VLLM_API_KEY={SECRET}\n" in worker_env
    assert cloud_init.count(SECRET) == 2, "INVENTIV_API_KEY and VLLM_API_KEY in that file, nowhere else"

    await provider.power_on(ZONE, server.id)

    assert fake.first_boot_cloud_init == {server.id: cloud_init}
    assert user_data_calls(fake, server.id) == ["PATCH /user_data/cloud-init", "POST /action"], "written once"


@pytest.mark.parametrize(
    ("commercial_type", "root_gb"),
    [("L40S-1-48G", 100), ("H100-1-80G", 100), ("RENDER-S", 20)],
)
async def test_a_diskless_worker_gets_a_root_volume_for_its_container(
    provider: ScalewayProvider, fake: FakeScaleway, commercial_type: str, root_gb: int
) -> None:
    worker = ServerSpec(name="inventiv-1", zone=ZONE, commercial_type=commercial_type, tags=TAGS, model=MODEL)
    server = await provider.create_server(worker)
    [root] = [v for v in await provider.list_server_volumes(ZONE, server.id) if v.is_root]
    # RENDER-S has a local disk: the image's own root (20 GB) is left as it is.
    assert root.size_bytes == root_gb * 10**9


async def test_a_server_without_a_model_gets_no_user_data(provider: ScalewayProvider, fake: FakeScaleway) -> None:
    server = await provider.create_server(spec())
    await provider.power_on(ZONE, server.id)
    assert fake.user_data == {} and fake.first_boot_cloud_init == {server.id: None}


@pytest.mark.parametrize(("engine", "setting"), [("vllm", "vllm_image"), ("sglang", "sglang_image"),
                                                 ("llama_cpp", "llama_cpp_image"), ("openai", "openai_image")])
async def test_each_engines_image_comes_from_the_settings(fake: FakeScaleway, engine: str, setting: str) -> None:
    settings = KEYED.replace(**fake.settings_changes(), **{setting: "registry.example.com/engine:v1"})
    provider = create_provider("scaleway", settings)
    try:
        server = await provider.create_server(model_spec(engine=engine))
    finally:
        await provider.close()
    assert server.tags[-1] == f"engine={engine}"
    assert "IMAGE=registry.example.com/engine:v1\n" in fake.user_data[server.id]["cloud-init"]


async def test_the_generic_engine_without_an_image_is_refused_before_anything_is_created(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    with pytest.raises(InvalidRequest, match="no container image for the openai engine"):
        await provider.create_server(model_spec(engine="openai"))
    assert fake.servers == {} and fake.requests == []


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5; reboot", "../models/qwen", "Qwen/$(id)"])
async def test_a_bad_model_id_is_refused_before_anything_is_created(
    provider: ScalewayProvider, fake: FakeScaleway, model: str
) -> None:
    with pytest.raises(InvalidRequest, match="cannot boot a Scaleway worker"):
        await provider.create_server(model_spec(model=model))
    assert fake.servers == {} and fake.requests == []


async def test_when_the_user_data_cannot_be_written_the_adopted_server_gets_it_at_power_on(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    fake.error_rate, fake.fault_paths = 1.0, ("/user_data/cloud-init",)
    with pytest.raises(TransientError, match="created but its cloud-init user data could not be set"):
        await provider.create_server(model_spec())
    # The server exists, stopped, without user data; what the scheduler's retry does: find it by tags.
    fake.error_rate = 0.0
    [adopted] = await provider.list_servers(ZONE, TAGS)
    assert adopted.state is ServerState.STOPPED and fake.user_data == {}

    await provider.power_on(ZONE, adopted.id)

    booted_with = fake.first_boot_cloud_init[adopted.id]
    assert booted_with is not None and f"MODEL={MODEL}\n" in booted_with
    # Rebuilt from the server's tags: the same engine, and the secret derived again from its instance id.
    assert f"VLLM_API_KEY={SECRET}\n" in booted_with
    assert user_data_calls(fake, adopted.id)[-2:] == ["PATCH /user_data/cloud-init", "POST /action"]


async def test_a_repeated_power_on_writes_nothing_once_the_server_started(
    provider: ScalewayProvider, fake: FakeScaleway
) -> None:
    server = await provider.create_server(model_spec())
    fake.error_after_rate, fake.fault_paths = 1.0, ("/action",)
    await provider.power_on(ZONE, server.id)  # its reply lost: the client's retry is refused, the server is starting
    fake.error_after_rate = 0.0
    del fake.user_data[server.id]

    await provider.power_on(ZONE, server.id)  # the scheduler repeats the step

    # Past its first boot, nothing more is written, even with the key gone.
    assert user_data_calls(fake, server.id) == ["PATCH /user_data/cloud-init"] + ["POST /action"] * 3
    assert fake.first_boot_cloud_init[server.id] is not None and server.id not in fake.user_data


async def test_power_on_of_a_missing_server_is_not_found(provider: ScalewayProvider) -> None:
    with pytest.raises(NotFound):
        await provider.power_on(ZONE, "00000000-0000-0000-0000-000000000000")
