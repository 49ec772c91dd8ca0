from __future__ import annotations

import pytest

from providers.base import ServerState
from scheduler.lifecycle import (
    BootingFacts,
    ProvisioningFacts,
    ReleaseFacts,
    ReleaseStep,
    Step,
    next_booting_step,
    next_provisioning_step,
    next_release_step,
)
from scheduler.volumes import VolumeAction as V


def prov(**kw: object) -> ProvisioningFacts:
    base: dict[str, object] = {
        "deadline_passed": False, "has_server": True, "boot_volume_tracked": True, "data_volume_gb": 200,
        "data_volume_tracked": True, "data_volume_attached": True,
    }  # fmt: skip
    return ProvisioningFacts(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (prov(has_server=False, boot_volume_tracked=False, data_volume_tracked=False), Step.CREATE_SERVER),
        (prov(boot_volume_tracked=False, data_volume_tracked=False), Step.DISCOVER_VOLUMES),
        (prov(data_volume_tracked=False, data_volume_attached=False), Step.CREATE_DATA_VOLUME),
        (prov(data_volume_attached=False), Step.ATTACH_DATA_VOLUME),
        (prov(), Step.POWER_ON),
        (prov(data_volume_gb=0, data_volume_tracked=False, data_volume_attached=False), Step.POWER_ON),
        (prov(deadline_passed=True), Step.FAIL_TIMEOUT),
        (prov(deadline_passed=True, has_server=False), Step.FAIL_TIMEOUT),
    ],
)
def test_next_provisioning_step(facts: ProvisioningFacts, expected: Step) -> None:
    assert next_provisioning_step(facts) is expected


def boot(**kw: object) -> BootingFacts:
    base: dict[str, object] = {
        "deadline_passed": False, "server_state": ServerState.RUNNING, "server_ip": "10.0.0.1",
        "address_recorded": True,
    }  # fmt: skip
    return BootingFacts(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (boot(), Step.HEALTH_CHECK),
        (boot(address_recorded=False), Step.RECORD_ADDRESS),
        (boot(server_ip=None, address_recorded=False), Step.WAIT),
        (boot(server_state=ServerState.STARTING, server_ip=None), Step.WAIT),
        (boot(server_state=ServerState.STOPPED, server_ip=None), Step.WAIT),
        (boot(server_state=ServerState.LOCKED), Step.WAIT),
        (boot(server_state=ServerState.UNKNOWN), Step.WAIT),
        (boot(server_state=ServerState.ERROR), Step.FAIL_SERVER_ERROR),
        (boot(server_state=None, server_ip=None), Step.FAIL_SERVER_GONE),
        (boot(deadline_passed=True), Step.FAIL_TIMEOUT),
    ],
)
def test_next_booting_step(facts: BootingFacts, expected: Step) -> None:
    assert next_booting_step(facts) is expected


RUNNING, STOPPED, STOPPING = ServerState.RUNNING, ServerState.STOPPED, ServerState.STOPPING


@pytest.mark.parametrize(
    ("servers", "untracked", "kept_attached", "volume_actions", "expected"),
    [
        ([RUNNING], True, True, [], ReleaseStep.TRACK_VOLUMES),
        ([], True, False, [V.DELETE], ReleaseStep.TRACK_VOLUMES),  # tagged, never recorded
        ([RUNNING], False, True, [], ReleaseStep.DETACH_KEPT),
        ([RUNNING], False, False, [], ReleaseStep.TERMINATE),
        ([STOPPED], False, False, [], ReleaseStep.TERMINATE),
        ([STOPPING], False, False, [], ReleaseStep.WAIT),
        ([STOPPING, RUNNING], False, False, [], ReleaseStep.TERMINATE),  # a duplicate still running
        ([], False, False, [V.WAIT, V.DELETE], ReleaseStep.SETTLE_VOLUMES),
        ([], False, False, [V.FORGET], ReleaseStep.SETTLE_VOLUMES),
        ([], False, False, [V.MARK_DETACHED, V.DONE], ReleaseStep.SETTLE_VOLUMES),
        ([], False, False, [V.WAIT, V.DONE], ReleaseStep.WAIT),
        ([], False, False, [V.DONE], ReleaseStep.FINISH),
        ([], False, False, [], ReleaseStep.FINISH),
    ],
)
def test_next_release_step(
    servers: list[ServerState], untracked: bool, kept_attached: bool, volume_actions: list[V], expected: ReleaseStep
) -> None:
    facts = ReleaseFacts(servers, untracked=untracked, kept_attached=kept_attached, volume_actions=volume_actions)
    assert next_release_step(facts) is expected
