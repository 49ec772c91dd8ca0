"""The recorded Scaleway traffic ships with the repository: a fresh clone runs every test."""

from __future__ import annotations

from pathlib import Path

import scaleway_bodies

ROOT = Path(__file__).resolve().parents[2]


def test_recordings_are_read_from_inside_the_repository() -> None:
    for path in (scaleway_bodies.BODIES_FILE, scaleway_bodies.CASSETTE_FILE):
        # resolve(): a link out of the checkout would break a clone just the same.
        assert path.resolve().is_relative_to(ROOT), f"{path} is outside {ROOT}"
        assert path.is_file()
    assert (scaleway_bodies.REFERENCE_DIR / "README.md").is_file()


def test_recordings_load() -> None:
    assert scaleway_bodies.recorded("server_404")
    assert len(scaleway_bodies.exchanges()) == 48
    assert scaleway_bodies.server_body("running")["id"] == scaleway_bodies.SERVER_ID
