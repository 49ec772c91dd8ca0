"""The Provider contract (providers/base.py), checked on every implementation the scheduler may meet.

Each case runs on the Scaleway provider against the fake Scaleway API, on the mock cloud (real worker
processes, so only one case powers a server on) and on the in-memory provider every scheduler test
uses. What a case checks is what base.py and SCALEWAY.md say: missing things read as None, deletes and
terminates are idempotent, servers are listed by ALL tags and volumes by ANY, the boot volume is slot
"0" and untagged, an attached volume cannot be deleted, and the states each call leaves behind. A fake
that drifts from the real cloud fails here. A case that cannot apply to one cloud is skipped in its
parametrization, with the reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_scaleway import run_fake_scaleway
from memory_provider import MemoryProvider
from mock_cloud import open_mock_cloud
from scaleway_bodies import GPU_IMAGE_ID

from inventiv.settings import Settings
from providers.base import (
    GB,
    Availability,
    Firewall,
    InvalidRequest,
    NotFound,
    Provider,
    Server,
    ServerSpec,
    ServerState,
    TransientError,
    Volume,
    VolumeState,
)
from providers.registry import create_provider

CLOUDS = ("scaleway", "mock", "memory")
# A missing id in the shape every cloud uses (Scaleway and the mock cloud: UUIDs).
MISSING = "00000000-0000-4000-8000-000000000000"
# A worker process of the mock cloud starts within seconds, even on a loaded machine; the fakes count reads.
SETTLE_S = 20.0
_POLL_S = 0.02
ROOT_BYTES = 30 * GB


@dataclass(frozen=True, slots=True)
class Cloud:
    """One implementation under test, with what it sells."""

    provider: Provider
    zone: str
    other_zone: str
    commercial_type: str
    image: str | None
    model: str | None
    # A type without local disk (needs a block-volume boot image), one with; None: the cloud sells none.
    diskless_type: str | None
    local_disk_type: str
    # Whether terminate leaves the boot volume detached (Scaleway's sbs root) or deletes it (a local root).
    keeps_root: bool

    def spec(self, tags: Iterable[str], *, zone: str | None = None, root_bytes: int | None = None) -> ServerSpec:
        return ServerSpec(
            name=f"contract-{uuid.uuid4().hex[:8]}", zone=zone or self.zone, commercial_type=self.commercial_type,
            tags=tuple(tags), image=self.image, root_volume_bytes=root_bytes, model=self.model,
        )  # fmt: skip

    async def server(self, *tags: str, zone: str | None = None, root_bytes: int | None = None) -> Server:
        return await self.provider.create_server(self.spec(tags or _tags(), zone=zone, root_bytes=root_bytes))

    async def volume(self, *tags: str, zone: str | None = None, size: int = 5 * GB) -> Volume:
        return await self.provider.create_volume(zone or self.zone, f"data-{uuid.uuid4().hex[:8]}", size, tags)


def clouds(**skipped: str) -> pytest.MarkDecorator:
    """Run the case on every cloud, but those named: `mock="why it cannot apply"`."""
    params = [
        pytest.param(name, marks=pytest.mark.skip(reason=f"{name}: {skipped[name]}")) if name in skipped else name
        for name in CLOUDS
    ]
    return pytest.mark.parametrize("cloud", params, indirect=True)


@pytest.fixture
async def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cloud]:
    name = request.param
    if name == "scaleway":
        # A terminated server stays `stopping` for a few reads, and a new volume reads `creating` once, as on Scaleway.
        async with run_fake_scaleway(polls_to_running=2, polls_to_gone=3, polls_to_available=1) as fake:
            provider = create_provider("scaleway", Settings().replace(**fake.settings_changes()))
            try:
                yield Cloud(provider, "fr-par-2", "fr-par-1", "L40S-1-48G", GPU_IMAGE_ID, None,
                            "L40S-1-48G", "RENDER-S", keeps_root=True)  # fmt: skip
            finally:
                await provider.close()
    elif name == "mock":
        async with open_mock_cloud(tmp_path / "mock-cloud") as mock:
            yield Cloud(mock, "local-1", "local-2", "MOCK-GPU-S", None, "test/served-model",
                        None, "MOCK-GPU-S", keeps_root=False)  # fmt: skip
    else:
        memory = MemoryProvider(diskless_types=["MEM-DISKLESS"], images={("MOCK-GPU-S", "ubuntu_noble"): "img-1"})
        yield Cloud(memory, "mem-1", "mem-2", "MOCK-GPU-S", None, None, "MEM-DISKLESS", "MOCK-GPU-S", keeps_root=True)


def _tags(*extra: str) -> tuple[str, ...]:
    """The deployment tag, an instance tag unique to the test, and `extra`."""
    return ("inventiv", f"instance={uuid.uuid4()}", *extra)


async def settled_server(cloud: Cloud, server_id: str, *wanted: ServerState) -> Server | None:
    """The server once it is in one of `wanted` states (no state: once it is gone)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        server = await cloud.provider.get_server(cloud.zone, server_id)
        if (server.state in wanted) if server is not None else not wanted:
            return server
        if time.monotonic() > deadline:
            raise AssertionError(f"server {server_id} is {server and server.state}, not {wanted or 'gone'}")
        await asyncio.sleep(_POLL_S)


async def available(cloud: Cloud, volume_id: str) -> Volume:
    """The volume once it is no longer being created."""
    for _ in range(50):
        volume = await cloud.provider.get_volume(cloud.zone, volume_id)
        assert volume is not None, f"volume {volume_id} vanished"
        if volume.state is not VolumeState.CREATING:
            return volume
        await asyncio.sleep(_POLL_S)
    raise AssertionError(f"volume {volume_id} is still being created")


async def assert_detached(cloud: Cloud, volume_id: str) -> Volume:
    volume = await cloud.provider.get_volume(cloud.zone, volume_id)
    assert volume is not None, f"volume {volume_id} is gone"
    assert (volume.state, volume.server_id) == (VolumeState.AVAILABLE, None)
    return volume


def ids(found: Iterable[Server | Volume | Firewall]) -> set[str]:
    return {item.id for item in found}


# -- missing things ------------------------------------------------------------------------------------


@clouds()
async def test_missing_things_read_as_none(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    assert await p.get_server(zone, MISSING) is None
    assert await p.get_volume(zone, MISSING) is None

    # A server or volume of another zone does not exist in this one.
    server = await cloud.server()
    [root] = server.volumes
    assert await p.get_server(cloud.other_zone, server.id) is None
    assert await p.get_volume(cloud.other_zone, root.id) is None


@clouds()
async def test_calls_that_need_a_missing_thing_raise_not_found(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    volume = await cloud.volume("inventiv")

    with pytest.raises(NotFound):
        await p.power_on(zone, MISSING)
    with pytest.raises(NotFound):
        await p.list_server_volumes(zone, MISSING)
    with pytest.raises(NotFound):
        await p.attach_volume(zone, server.id, MISSING)
    with pytest.raises(NotFound):
        await p.attach_volume(zone, MISSING, volume.id)
    with pytest.raises(NotFound):
        await p.set_volume_tags(zone, MISSING, ["inventiv"])
    assert (await assert_detached(cloud, volume.id)).tags == ("inventiv",)


# -- idempotent deletes ----------------------------------------------------------------------------------


@clouds()
async def test_terminate_and_delete_of_what_is_gone_are_done(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    await p.terminate_server(zone, MISSING)
    await p.delete_volume(zone, MISSING)
    await p.delete_firewall(zone, MISSING)

    server = await cloud.server()
    await p.terminate_server(zone, server.id)
    assert await settled_server(cloud, server.id) is None
    await p.terminate_server(zone, server.id)

    volume = await cloud.volume("inventiv")
    await p.delete_volume(zone, volume.id)
    assert await p.get_volume(zone, volume.id) is None
    await p.delete_volume(zone, volume.id)


@clouds()
async def test_terminate_and_delete_in_another_zone_touch_nothing(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    volume = await cloud.volume("inventiv")

    await p.terminate_server(cloud.other_zone, server.id)
    await p.delete_volume(cloud.other_zone, volume.id)
    await p.detach_volume(cloud.other_zone, server.id, server.volumes[0].id)

    assert (await p.get_server(zone, server.id)) is not None
    assert [v.slot for v in await p.list_server_volumes(zone, server.id)] == ["0"]
    await assert_detached(cloud, volume.id)


# -- servers -----------------------------------------------------------------------------------------------


@clouds()
async def test_a_new_server_is_stopped_with_its_untagged_boot_volume_in_slot_0(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    tags = _tags()
    server = await cloud.server(*tags, root_bytes=ROOT_BYTES)

    assert (server.zone, server.commercial_type, server.state) == (zone, cloud.commercial_type, ServerState.STOPPED)
    assert set(tags) <= set(server.tags)
    assert "poweron" in server.allowed_actions and "terminate" not in server.allowed_actions
    assert server.ip_address is None
    [root] = server.volumes
    assert root.slot == "0" and root.is_root

    read = await p.get_server(zone, server.id)
    assert read is not None and (read.id, read.name, read.state) == (server.id, server.name, ServerState.STOPPED)
    [listed] = await p.list_server_volumes(zone, server.id)
    assert (listed.id, listed.slot, listed.size_bytes) == (root.id, "0", ROOT_BYTES)

    volume = await p.get_volume(zone, root.id)
    assert volume is not None
    assert (volume.state, volume.server_id, volume.size_bytes) == (VolumeState.IN_USE, server.id, ROOT_BYTES)
    # Scaleway copies no server tag onto the boot volume: the tag sweep cannot find it until it is tagged.
    assert volume.tags == ()
    assert root.id not in ids(await p.list_volumes(zone, tags))


@clouds()
async def test_set_volume_tags_replaces_the_tags(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    tags = _tags()
    [root] = (await cloud.server(*tags)).volumes

    await p.set_volume_tags(zone, root.id, tags)
    tagged = await p.get_volume(zone, root.id)
    assert tagged is not None and set(tagged.tags) == set(tags)
    assert root.id in ids(await p.list_volumes(zone, [tags[1]]))

    await p.set_volume_tags(zone, root.id, ["replaced"])
    replaced = await p.get_volume(zone, root.id)
    assert replaced is not None and replaced.tags == ("replaced",)
    assert root.id not in ids(await p.list_volumes(zone, [tags[1]]))


@clouds()
async def test_servers_are_listed_by_all_of_the_tags_in_their_zone(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    a = await cloud.server("inventiv", "a")
    b = await cloud.server("inventiv", "b")
    elsewhere = await cloud.server("inventiv", "a", zone=cloud.other_zone)

    assert ids(await p.list_servers(zone, ["inventiv"])) == {a.id, b.id}
    assert ids(await p.list_servers(zone, ["inventiv", "a"])) == {a.id}
    assert ids(await p.list_servers(zone, ["a", "b"])) == set()
    assert ids(await p.list_servers(zone, [])) == {a.id, b.id}
    assert ids(await p.list_servers(cloud.other_zone, ["a"])) == {elsewhere.id}
    [listed] = await p.list_servers(zone, ["b"])
    assert (listed.state, [v.slot for v in listed.volumes]) == (ServerState.STOPPED, ["0"])


@clouds()
async def test_power_on_then_terminate_a_running_server(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    [root] = server.volumes
    data = await cloud.volume("inventiv")
    await p.attach_volume(zone, server.id, data.id)

    await p.power_on(zone, server.id)
    starting = await p.get_server(zone, server.id)
    assert starting is not None and starting.state in (ServerState.STARTING, ServerState.RUNNING)
    await p.power_on(zone, server.id)  # already starting or running: accepted, nothing changes

    running = await settled_server(cloud, server.id, ServerState.RUNNING)
    assert running is not None and running.ip_address is not None
    assert "terminate" in running.allowed_actions
    assert {v.id for v in running.volumes} == {root.id, data.id}
    with pytest.raises(TransientError):
        await p.delete_volume(zone, data.id)

    await p.terminate_server(zone, server.id)
    leaving = await p.get_server(zone, server.id)
    assert leaving is None or leaving.state is ServerState.STOPPING
    await p.terminate_server(zone, server.id)  # already on its way out: done, not an error
    assert await settled_server(cloud, server.id) is None

    await assert_left_after_terminate(cloud, root.id, data.id)


async def assert_left_after_terminate(cloud: Cloud, root_id: str, data_id: str) -> None:
    """Data volumes stay, detached; the boot volume stays detached where the cloud keeps it, else is gone."""
    await assert_detached(cloud, data_id)
    if cloud.keeps_root:
        await assert_detached(cloud, root_id)
    else:
        assert await cloud.provider.get_volume(cloud.zone, root_id) is None


@clouds()
async def test_terminate_of_a_stopped_server_leaves_its_data_volumes_detached(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    [root] = server.volumes
    data = await cloud.volume("inventiv")
    await p.attach_volume(zone, server.id, data.id)

    await p.terminate_server(zone, server.id)

    assert await settled_server(cloud, server.id) is None
    await assert_left_after_terminate(cloud, root.id, data.id)


# -- volumes -----------------------------------------------------------------------------------------------


@clouds()
async def test_a_new_volume_is_detached_with_its_tags_and_size(cloud: Cloud) -> None:
    tags = _tags()
    made = await cloud.provider.create_volume(cloud.zone, "data-1", 7 * GB, tags)
    assert made.state in (VolumeState.CREATING, VolumeState.AVAILABLE) and made.server_id is None

    volume = await available(cloud, made.id)
    assert (volume.name, volume.zone, volume.size_bytes) == ("data-1", cloud.zone, 7 * GB)
    assert (volume.state, volume.server_id, set(volume.tags)) == (VolumeState.AVAILABLE, None, set(tags))
    with pytest.raises(InvalidRequest):
        await cloud.provider.create_volume(cloud.zone, "empty", 0, tags)


@clouds()
async def test_volumes_are_listed_by_any_of_the_tags_in_their_zone(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    a = await cloud.volume("inventiv", "a")
    b = await cloud.volume("inventiv", "b")
    c = await cloud.volume("c")
    elsewhere = await cloud.volume("a", zone=cloud.other_zone)

    assert ids(await p.list_volumes(zone, ["a"])) == {a.id}
    assert ids(await p.list_volumes(zone, ["a", "b"])) == {a.id, b.id}
    assert ids(await p.list_volumes(zone, ["a", "c"])) == {a.id, c.id}
    assert ids(await p.list_volumes(zone, ["inventiv"])) == {a.id, b.id}
    assert ids(await p.list_volumes(zone, [])) == {a.id, b.id, c.id}
    assert ids(await p.list_volumes(cloud.other_zone, ["a"])) == {elsewhere.id}
    assert ids(await p.list_volumes(zone, ["nobody"])) == set()


@clouds()
async def test_attach_and_detach_are_idempotent_and_change_the_states(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    data = await cloud.volume("inventiv", size=6 * GB)  # made first: listings still come in slot order
    server = await cloud.server()
    other = await cloud.server()

    await p.attach_volume(zone, server.id, data.id)
    await p.attach_volume(zone, server.id, data.id)
    attached = await p.get_volume(zone, data.id)
    assert attached is not None and (attached.state, attached.server_id) == (VolumeState.IN_USE, server.id)
    root, entry = await p.list_server_volumes(zone, server.id)
    assert root.slot == "0" and (entry.id, entry.size_bytes) == (data.id, 6 * GB) and entry.slot not in ("0", "")
    read = await p.get_server(zone, server.id)
    assert read is not None and [v.id for v in read.volumes] == [root.id, data.id]

    # A volume belongs to one server at a time.
    with pytest.raises(InvalidRequest):
        await p.attach_volume(zone, other.id, data.id)
    with pytest.raises(InvalidRequest):
        await p.detach_volume(zone, other.id, data.id)
    still = await p.get_volume(zone, data.id)
    assert still is not None and still.server_id == server.id

    await p.detach_volume(zone, server.id, data.id)
    await p.detach_volume(zone, server.id, data.id)
    await assert_detached(cloud, data.id)
    assert [v.id for v in await p.list_server_volumes(zone, server.id)] == [root.id]


@clouds()
async def test_deleting_an_attached_volume_is_refused(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    [root] = server.volumes
    data = await cloud.volume("inventiv")
    await p.attach_volume(zone, server.id, data.id)

    for volume_id in (root.id, data.id):
        with pytest.raises(TransientError):
            await p.delete_volume(zone, volume_id)
        kept = await p.get_volume(zone, volume_id)
        assert kept is not None and (kept.state, kept.server_id) == (VolumeState.IN_USE, server.id)

    await p.detach_volume(zone, server.id, data.id)
    await p.delete_volume(zone, data.id)
    assert await p.get_volume(zone, data.id) is None


# -- catalog -----------------------------------------------------------------------------------------------


@clouds()
async def test_availability_reports_the_stock_of_what_the_cloud_sells(cloud: Cloud) -> None:
    stock = await cloud.provider.availability(cloud.zone)
    assert stock[cloud.commercial_type] is Availability.AVAILABLE
    assert all(isinstance(value, Availability) for value in stock.values())


@clouds()
async def test_a_type_with_local_disk_needs_no_boot_image_and_one_resolves(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    assert await p.needs_boot_image(zone, cloud.local_disk_type) is False
    image = await p.resolve_boot_image(zone, cloud.commercial_type, [])
    assert isinstance(image, str) and image
    assert await p.resolve_boot_image(zone, "NO-SUCH-TYPE", []) is None


@clouds(mock="the mock cloud sells no diskless type and has one image for every label")
async def test_a_diskless_type_needs_a_boot_image_found_by_label(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    assert cloud.diskless_type is not None
    assert await p.needs_boot_image(zone, cloud.diskless_type) is True
    assert await p.resolve_boot_image(zone, cloud.commercial_type, ["no_such_label"]) is None


# -- firewalls ---------------------------------------------------------------------------------------------


@clouds()
async def test_firewalls_are_listed_by_all_of_the_tags(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    assert await p.list_firewalls(zone, ["inventiv", "nobody"]) == []
    for firewall in await p.list_firewalls(zone, ["inventiv"]):
        assert "inventiv" in firewall.tags and server.id in firewall.server_ids


@clouds(mock="the mock cloud makes no firewalls", memory="the in-memory provider makes no firewalls")
async def test_a_firewall_in_use_is_not_deleted(cloud: Cloud) -> None:
    p, zone = cloud.provider, cloud.zone
    server = await cloud.server()
    [firewall] = await p.list_firewalls(zone, ["inventiv"])
    assert firewall.server_ids == (server.id,)

    with pytest.raises(TransientError):
        await p.delete_firewall(zone, firewall.id)
    assert ids(await p.list_firewalls(zone, ["inventiv"])) == {firewall.id}

    await p.terminate_server(zone, server.id)
    await p.delete_firewall(zone, firewall.id)
    assert await p.list_firewalls(zone, ["inventiv"]) == []
    await p.delete_firewall(zone, firewall.id)
