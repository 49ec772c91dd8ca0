"""Names and tags of what the scheduler creates in a cloud.

Every server and volume carries the deployment tag and `instance=<instance id>`: the provisioning step
finds a server again by them after a crash (adopting it instead of creating a second one), and the
orphan sweep finds what no live instance row owns. Resources without this deployment's tag are never ours.
"""

from __future__ import annotations

from collections.abc import Sequence

_INSTANCE_TAG = "instance="


def server_name(instance_id: str) -> str:
    return f"inventiv-{instance_id[:8]}"


def data_volume_name(instance_id: str) -> str:
    return f"inventiv-{instance_id[:8]}-data"


def instance_tag(instance_id: str) -> str:
    return _INSTANCE_TAG + instance_id


def resource_tags(deployment_tag: str, instance_id: str) -> tuple[str, ...]:
    return (deployment_tag, instance_tag(instance_id))


def tagged_instance_id(tags: Sequence[str]) -> str | None:
    """The instance id an `instance=` tag names, or None."""
    for tag in tags:
        if tag.startswith(_INSTANCE_TAG) and len(tag) > len(_INSTANCE_TAG):
            return tag[len(_INSTANCE_TAG) :]
    return None


def is_ours(tags: Sequence[str], deployment_tag: str) -> bool:
    return deployment_tag in tags
