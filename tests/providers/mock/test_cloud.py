"""The mock cloud: real worker processes, state shared through the file, volumes and faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from mock_cloud import open_mock_cloud, wait_for_state

from providers.base import (
    GB,
    Availability,
    InvalidRequest,
    NotFound,
    OutOfStock,
    QuotaExceeded,
    ServerSpec,
    ServerState,
    TransientError,
    VolumeState,
)
from providers.mock import processes
from providers.mock.cloud import (
    BOOT_VOLUME_BYTES,
    MOCK_TYPES,
    VOLUME_TYPE,
    MockCloud,
    matches_fault_target,
    next_slot,
    server_state,
    stop_all_workers,
)
from providers.mock.processes import ProcessRef

ZONE = "local-1"
MODEL = "test/served-model"
TAGS = ("inventiv", "instance=abc")


def spec(name: str = "srv", tags: tuple[str, ...] = TAGS, commercial_type: str = "MOCK-GPU-S") -> ServerSpec:
    return ServerSpec(name=name, zone=ZONE, commercial_type=commercial_type, tags=tags, model=MODEL)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "mock-cloud"


@pytest.fixture
async def cloud(state_dir: Path) -> AsyncIterator[MockCloud]:
    async with open_mock_cloud(state_dir) as opened:
        yield opened


async def worker_pid(cloud: MockCloud, server_id: str) -> ProcessRef:
    record = (await cloud.snapshot())["servers"][server_id]["process"]
    return ProcessRef(record["pid"], record["start_time"])


# -- pure decisions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alive", "healthy", "expected"),
    [
        (False, False, ServerState.STOPPED),
        (False, True, ServerState.STOPPED),  # a dead process of a running server
        (True, False, ServerState.STARTING),
        (True, True, ServerState.RUNNING),
    ],
)
def test_server_state(alive: bool, healthy: bool, expected: ServerState) -> None:
    assert server_state(alive, healthy) is expected


@pytest.mark.parametrize(
    ("used", "expected"),
    [([], "1"), (["0"], "1"), (["0", "1"], "2"), (["0", "2"], "1"), (["0", "1", "2", "3"], "4")],
)
def test_next_slot(used: list[str], expected: str) -> None:
    assert next_slot(used) == expected


@pytest.mark.parametrize(
    ("target", "expected"), [("id-1", True), ("srv", True), ("instance=abc", True), ("other", False)]
)
def test_fault_target_matches_id_name_or_tag(target: str, expected: bool) -> None:
    record = {"id": "id-1", "name": "srv", "tags": ["inventiv", "instance=abc"]}
    assert matches_fault_target(target, record) is expected


# -- servers -------------------------------------------------------------------------------------------


async def test_create_leaves_the_server_stopped_with_an_untagged_boot_volume(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    assert server.state is ServerState.STOPPED
    assert server.tags == TAGS
    assert server.ip_address is None and server.worker_port is None
    assert server.allowed_actions == ("poweron", "delete")
    [boot] = server.volumes
    assert (boot.slot, boot.volume_type, boot.size_bytes, boot.is_root) == ("0", VOLUME_TYPE, BOOT_VOLUME_BYTES, True)
    volume = await cloud.get_volume(ZONE, boot.id)
    assert volume is not None
    assert volume.tags == () and volume.state is VolumeState.IN_USE and volume.server_id == server.id
    assert await cloud.list_server_volumes(ZONE, server.id) == [boot]


async def test_power_on_starts_a_worker_that_serves_the_model(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    await cloud.power_on(ZONE, server.id)
    await cloud.power_on(ZONE, server.id)  # already on: nothing more starts
    running = await wait_for_state(cloud, ZONE, server.id, ServerState.RUNNING)
    assert running.ip_address == "127.0.0.1" and running.worker_port
    assert running.allowed_actions == ("terminate",)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{running.worker_port}/v1/models") as resp,
    ):
        assert resp.status == 200
        assert [m["id"] for m in (await resp.json())["data"]] == [MODEL]
    assert len((await cloud.snapshot())["processes"]) == 1


async def test_state_survives_a_new_instance_and_terminate_leaves_no_process(
    cloud: MockCloud, state_dir: Path
) -> None:
    server = await cloud.create_server(spec())
    data = await cloud.create_volume(ZONE, "data", 200 * GB, ["inventiv"])
    await cloud.attach_volume(ZONE, server.id, data.id)
    await cloud.power_on(ZONE, server.id)
    await wait_for_state(cloud, ZONE, server.id, ServerState.RUNNING)
    ref = await worker_pid(cloud, server.id)
    boot_id = server.volumes[0].id

    async with open_mock_cloud(state_dir) as restarted:
        again = await restarted.get_server(ZONE, server.id)
        assert again is not None and again.state is ServerState.RUNNING
        assert [v.slot for v in again.volumes] == ["0", "1"]
        await restarted.terminate_server(ZONE, server.id)
        await restarted.terminate_server(ZONE, server.id)  # gone = done

    assert not processes.is_alive(ref)
    assert await cloud.get_server(ZONE, server.id) is None
    assert await cloud.get_volume(ZONE, boot_id) is None
    left = await cloud.get_volume(ZONE, data.id)
    assert left is not None and left.state is VolumeState.AVAILABLE and left.server_id is None
    assert (await cloud.snapshot())["processes"] == []


async def test_deleting_a_stopped_server_deletes_its_boot_volume_only(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    data = await cloud.create_volume(ZONE, "data", 10 * GB, [])
    await cloud.attach_volume(ZONE, server.id, data.id)
    await cloud.terminate_server(ZONE, server.id)
    assert await cloud.get_server(ZONE, server.id) is None
    assert [v.id for v in await cloud.list_volumes(ZONE, [])] == [data.id]


async def test_a_dead_worker_makes_the_server_stopped_and_it_can_be_powered_on_again(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    await cloud.power_on(ZONE, server.id)
    await wait_for_state(cloud, ZONE, server.id, ServerState.RUNNING)
    ref = await worker_pid(cloud, server.id)
    os.killpg(ref.pid, signal.SIGKILL)
    stopped = await wait_for_state(cloud, ZONE, server.id, ServerState.STOPPED)
    assert stopped.ip_address is None and stopped.worker_port is None
    await cloud.power_on(ZONE, server.id)
    await wait_for_state(cloud, ZONE, server.id, ServerState.RUNNING)
    assert (await worker_pid(cloud, server.id)).pid != ref.pid


async def test_list_servers_matches_every_tag_in_the_zone(cloud: MockCloud) -> None:
    a = await cloud.create_server(spec("a", ("inventiv", "instance=a")))
    await cloud.create_server(spec("b", ("inventiv", "instance=b")))
    await cloud.create_server(spec("c", ("other",)))
    assert {s.name for s in await cloud.list_servers(ZONE, ["inventiv"])} == {"a", "b"}
    assert [s.id for s in await cloud.list_servers(ZONE, ["inventiv", "instance=a"])] == [a.id]
    assert await cloud.list_servers("elsewhere", []) == []
    assert await cloud.get_server("elsewhere", a.id) is None


async def test_bad_requests_raise_typed_errors(cloud: MockCloud) -> None:
    with pytest.raises(InvalidRequest, match="unknown commercial type"):
        await cloud.create_server(spec(commercial_type="GPU-9000"))
    with pytest.raises(NotFound):
        await cloud.power_on(ZONE, "no-such-server")
    with pytest.raises(NotFound):
        await cloud.list_server_volumes(ZONE, "no-such-server")
    with pytest.raises(InvalidRequest, match="positive"):
        await cloud.create_volume(ZONE, "empty", 0, [])


async def test_creates_and_terminates_run_concurrently(cloud: MockCloud) -> None:
    servers = await asyncio.gather(*(cloud.create_server(spec(f"s{i}", ("inventiv",))) for i in range(4)))
    await asyncio.gather(*(cloud.power_on(ZONE, s.id) for s in servers))
    running = await asyncio.gather(*(wait_for_state(cloud, ZONE, s.id, ServerState.RUNNING) for s in servers))
    assert len({s.worker_port for s in running}) == 4
    refs = [await worker_pid(cloud, s.id) for s in servers]
    await asyncio.gather(*(cloud.terminate_server(ZONE, s.id) for s in servers))
    assert not any(processes.is_alive(ref) for ref in refs)
    snapshot = await cloud.snapshot()
    assert snapshot["servers"] == {} and snapshot["volumes"] == {} and snapshot["processes"] == []


async def test_two_processes_see_one_cloud(cloud: MockCloud, state_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from providers.base import ServerSpec
        from providers.mock.cloud import MockCloud

        async def main():
            cloud = MockCloud({str(state_dir)!r})
            spec = ServerSpec(name="child", zone={ZONE!r}, commercial_type="MOCK-GPU-S", tags=("child",))
            await asyncio.gather(*(cloud.create_server(spec) for _ in range(5)))
            await cloud.close()

        asyncio.run(main())
        """
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=subprocess.PIPE)
    await asyncio.gather(*(cloud.create_server(spec("parent", ("parent",))) for _ in range(5)))
    _, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()
    servers = (await cloud.snapshot())["servers"].values()
    assert sorted(s["name"] for s in servers) == ["child"] * 5 + ["parent"] * 5


async def test_stop_all_workers_ends_every_process(cloud: MockCloud, state_dir: Path) -> None:
    server = await cloud.create_server(spec())
    await cloud.power_on(ZONE, server.id)
    ref = await worker_pid(cloud, server.id)
    assert await asyncio.to_thread(stop_all_workers, state_dir) == 1
    assert not processes.is_alive(ref)


# -- volumes -------------------------------------------------------------------------------------------


async def test_data_volumes_attach_detach_tag_and_delete(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    other = await cloud.create_server(spec("other"))
    first = await cloud.create_volume(ZONE, "first", 200 * GB, ["inventiv", "instance=abc"])
    second = await cloud.create_volume(ZONE, "second", 500 * GB, ["keep"])
    assert (first.state, first.size_bytes, first.volume_type) == (VolumeState.AVAILABLE, 200 * GB, VOLUME_TYPE)

    await cloud.attach_volume(ZONE, server.id, first.id)
    await cloud.attach_volume(ZONE, server.id, first.id)  # already attached here: done
    await cloud.attach_volume(ZONE, server.id, second.id)
    listed = await cloud.list_server_volumes(ZONE, server.id)
    assert [(v.slot, v.size_bytes) for v in listed] == [("0", BOOT_VOLUME_BYTES), ("1", 200 * GB), ("2", 500 * GB)]
    with pytest.raises(InvalidRequest, match="attached to server"):
        await cloud.attach_volume(ZONE, other.id, first.id)
    with pytest.raises(TransientError, match="in use"):
        await cloud.delete_volume(ZONE, first.id)
    with pytest.raises(InvalidRequest, match="boot volume"):
        await cloud.detach_volume(ZONE, server.id, listed[0].id)

    await cloud.detach_volume(ZONE, server.id, first.id)
    await cloud.detach_volume(ZONE, server.id, first.id)  # already detached: done
    await cloud.set_volume_tags(ZONE, first.id, ["inventiv", "boot=no"])
    tagged = await cloud.list_volumes(ZONE, ["boot=no", "keep"])  # ANY of the tags
    assert {v.id for v in tagged} == {first.id, second.id}
    assert (await cloud.get_volume(ZONE, first.id)).tags == ("inventiv", "boot=no")  # type: ignore[union-attr]
    await cloud.delete_volume(ZONE, first.id)
    await cloud.delete_volume(ZONE, first.id)  # gone = done
    assert await cloud.get_volume(ZONE, first.id) is None
    with pytest.raises(NotFound):
        await cloud.set_volume_tags(ZONE, first.id, [])
    with pytest.raises(NotFound):
        await cloud.attach_volume(ZONE, server.id, first.id)


# -- catalog and faults --------------------------------------------------------------------------------


async def test_catalog(cloud: MockCloud) -> None:
    assert await cloud.availability(ZONE) == {t: Availability.AVAILABLE for t in MOCK_TYPES}
    assert await cloud.needs_boot_image(ZONE, "MOCK-GPU-S") is False
    assert await cloud.resolve_boot_image(ZONE, "MOCK-GPU-M", ["any"]) == "mock-worker"
    assert await cloud.resolve_boot_image(ZONE, "L40S-1-48G", ["any"]) is None


async def test_power_on_fault_by_tag_starts_no_process(cloud: MockCloud) -> None:
    server = await cloud.create_server(spec())
    await cloud.fail_power_on("instance=abc")
    with pytest.raises(OutOfStock, match="injected"):
        await cloud.power_on(ZONE, server.id)
    await cloud.fail_power_on(server.id, "quota")
    with pytest.raises(QuotaExceeded):
        await cloud.power_on(ZONE, server.id)
    assert (await cloud.snapshot())["processes"] == []
    with pytest.raises(ValueError, match="unknown fault"):
        await cloud.fail_power_on(server.id, "meteor")


async def test_out_of_stock_type(cloud: MockCloud) -> None:
    await cloud.set_out_of_stock("MOCK-GPU-M")
    with pytest.raises(OutOfStock):
        await cloud.create_server(spec(commercial_type="MOCK-GPU-M"))
    assert (await cloud.availability(ZONE))["MOCK-GPU-M"] is Availability.SHORTAGE
    await cloud.set_out_of_stock("MOCK-GPU-M", out=False)
    await cloud.create_server(spec(commercial_type="MOCK-GPU-M"))


async def test_transient_faults_are_shared_by_every_instance(cloud: MockCloud, state_dir: Path) -> None:
    await cloud.fail_next_calls(2)
    async with open_mock_cloud(state_dir) as other:
        with pytest.raises(TransientError):
            await other.list_servers(ZONE, [])
        with pytest.raises(TransientError):
            await cloud.create_server(spec())
        assert await other.list_servers(ZONE, []) == []
    await cloud.fail_next_calls(1)
    await cloud.clear_faults()
    assert await cloud.list_volumes(ZONE, []) == []
