from __future__ import annotations

import pytest

from scheduler.naming import data_volume_name, is_ours, resource_tags, server_name, tagged_instance_id

ID = "0b7f9c3e-1111-2222-3333-444455556666"


def test_names_and_tags() -> None:
    assert server_name(ID) == "inventiv-0b7f9c3e"
    assert data_volume_name(ID) == "inventiv-0b7f9c3e-data"
    assert resource_tags("prod", ID) == ("prod", f"instance={ID}")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [((f"instance={ID}", "prod"), ID), (("prod",), None), (("instance=",), None), ((), None)],
)
def test_tagged_instance_id(tags: tuple[str, ...], expected: str | None) -> None:
    assert tagged_instance_id(tags) == expected


def test_is_ours_is_an_exact_tag_match() -> None:
    assert is_ours(("prod", "x"), "prod")
    assert not is_ours(("prod-2",), "prod")
