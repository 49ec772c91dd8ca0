"""Attach, detach and terminate after a lost reply: the retry is refused, the state read again decides.

Recorded bodies through aioresponses: each case answers the first call 500 (the reply lost), the
retry 400 with the message Scaleway gives when the change is already made, then serves the state the
provider reads back. Done only when that state shows the change; otherwise the refusal stands.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses
from scaleway_bodies import PROJECT_ID, SERVER_ID, ZONE, recorded, server_body

from providers.base import InvalidRequest
from providers.scaleway.client import RetryPolicy, ScalewayClient
from providers.scaleway.provider import ScalewayProvider, attached_to, terminate_accepted

API = "https://api.test"
VOLUME_ID = "84500127-2893-4a3f-8790-dcf9e8e6213f"
OTHER_SERVER = "00000000-0000-4000-8000-000000000001"
SERVER = f"{API}/instance/v1/zones/{ZONE}/servers/{SERVER_ID}"
VOLUME = f"{API}/block/v1/zones/{ZONE}/volumes/{VOLUME_ID}"
LOST = {"message": "internal error", "type": "internal_error"}
GONE = object()  # the re-read answers 404


def volume(*references: tuple[str, str]) -> dict[str, Any]:
    """The recorded Block volume with one reference per (server id, reference status)."""
    body: dict[str, Any] = recorded("block_volume_after_terminate")
    template = recorded("block_volume_boot_attached")["references"][0]
    body["references"] = [{**copy.deepcopy(template), "product_resource_id": s, "status": st} for s, st in references]
    body["status"] = "in_use" if references else "available"
    return body


def refused(message: str) -> dict[str, str]:
    return {"type": "invalid_request_error", "message": message}


async def _sleep(_: float) -> None:
    return None


@pytest.fixture
async def provider() -> AsyncIterator[ScalewayProvider]:
    client = ScalewayClient("secret", API, retry=RetryPolicy(attempts=3, base_s=2.0), sleep=_sleep)
    made = ScalewayProvider(client, PROJECT_ID)
    yield made
    await made.close()


def answer(mocked: aioresponses, url: str, body: Any) -> None:
    if body is GONE:
        mocked.get(url, status=404, payload=recorded("server_404"))
    else:
        mocked.get(url, payload={"server": body} if "/servers/" in url else body)


def posts(mocked: aioresponses, path_end: str) -> int:
    return sum(len(found) for (method, url), found in mocked.requests.items()
               if method == "POST" and url.path.endswith(path_end))


# -- the decisions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (None, True),  # gone
        (server_body("stopping", "terminating"), True),
        ({**server_body("stopping", "terminating"), "state_detail": ""}, False),  # a poweroff, not ours
        (server_body("running"), False),
        (server_body("stopped"), False),
        (server_body("starting"), False),
    ],
)
def test_terminate_accepted(body: dict[str, Any] | None, accepted: bool) -> None:
    assert terminate_accepted(body) is accepted


@pytest.mark.parametrize(
    ("body", "attached"),
    [
        (None, False),
        (volume(), False),
        (volume((SERVER_ID, "attaching")), True),
        (volume((SERVER_ID, "attached")), True),
        (volume((SERVER_ID, "detaching")), False),
        (volume((SERVER_ID, "detached")), False),
        (volume((OTHER_SERVER, "attached")), False),
        (volume((SERVER_ID, "detached"), (SERVER_ID, "attaching")), True),
        ({**volume((SERVER_ID, "attached")), "references": [{"product_resource_type": "other",
                                                             "product_resource_id": SERVER_ID,
                                                             "status": "attached"}]}, False),
    ],
)
def test_attached_to(body: dict[str, Any] | None, attached: bool) -> None:
    assert attached_to(body, SERVER_ID) is attached


# -- attach ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "done"),
    [
        (volume((SERVER_ID, "attached")), True),
        (volume((SERVER_ID, "attaching")), True),
        (volume((OTHER_SERVER, "attached")), False),  # someone else's attach won the race
        (volume(), False),  # refused for another reason
    ],
)
async def test_attach_after_a_lost_reply(provider: ScalewayProvider, after: dict[str, Any], done: bool) -> None:
    with aioresponses() as mocked:
        answer(mocked, VOLUME, volume())
        mocked.post(f"{SERVER}/attach-volume", status=500, payload=LOST)
        mocked.post(f"{SERVER}/attach-volume", status=400, payload=refused("volume is already attached to a server"))
        answer(mocked, VOLUME, after)
        if done:
            await provider.attach_volume(ZONE, SERVER_ID, VOLUME_ID)
        else:
            with pytest.raises(InvalidRequest, match="already attached"):
                await provider.attach_volume(ZONE, SERVER_ID, VOLUME_ID)
        assert posts(mocked, "/attach-volume") == 2


# -- detach ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "done"),
    [
        (volume(), True),
        (volume((SERVER_ID, "detaching")), True),
        (volume((SERVER_ID, "detached")), True),
        (GONE, True),
        (volume((SERVER_ID, "attached")), False),  # still attached: the refusal was about something else
    ],
)
async def test_detach_after_a_lost_reply(provider: ScalewayProvider, after: Any, done: bool) -> None:
    with aioresponses() as mocked:
        answer(mocked, VOLUME, volume((SERVER_ID, "attached")))
        mocked.post(f"{SERVER}/detach-volume", status=500, payload=LOST)
        mocked.post(f"{SERVER}/detach-volume", status=400, payload=refused("volume is not attached"))
        answer(mocked, VOLUME, after)
        if done:
            await provider.detach_volume(ZONE, SERVER_ID, VOLUME_ID)
        else:
            with pytest.raises(InvalidRequest, match="not attached"):
                await provider.detach_volume(ZONE, SERVER_ID, VOLUME_ID)
        assert posts(mocked, "/detach-volume") == 2


# -- terminate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "done"),
    [
        (server_body("stopping", "terminating"), True),
        (GONE, True),
        (server_body("running"), False),
        (server_body("stopped"), False),  # powered off meanwhile: not terminated, the caller must know
    ],
)
async def test_terminate_after_a_lost_reply(provider: ScalewayProvider, after: Any, done: bool) -> None:
    with aioresponses() as mocked:
        answer(mocked, SERVER, server_body("running"))
        mocked.post(f"{SERVER}/action", status=500, payload=LOST)
        mocked.post(f"{SERVER}/action", status=400, payload=refused("server should be running"))
        answer(mocked, SERVER, after)
        if done:
            await provider.terminate_server(ZONE, SERVER_ID)
        else:
            with pytest.raises(InvalidRequest, match="should be running"):
                await provider.terminate_server(ZONE, SERVER_ID)
        assert posts(mocked, "/action") == 2


async def test_a_refusal_without_a_lost_reply_is_checked_the_same_way(provider: ScalewayProvider) -> None:
    # Another caller attached it between our read and our call: the state, not the message, decides.
    with aioresponses() as mocked:
        answer(mocked, VOLUME, volume())
        mocked.post(f"{SERVER}/attach-volume", status=400, payload=refused("volume is already attached to a server"))
        answer(mocked, VOLUME, volume((SERVER_ID, "attached")))
        await provider.attach_volume(ZONE, SERVER_ID, VOLUME_ID)
        assert posts(mocked, "/attach-volume") == 1
