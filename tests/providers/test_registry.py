"""create_provider: one place that builds every cloud from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventiv.settings import Settings
from providers.mock.cloud import MockCloud
from providers.registry import create_provider


def test_mock_lives_under_the_data_dir_by_default(tmp_path: Path) -> None:
    provider = create_provider("mock", Settings(data_dir=str(tmp_path)))
    assert isinstance(provider, MockCloud) and provider.code == "mock"
    assert provider.state_dir == tmp_path.resolve() / "mock-cloud"


def test_mock_cloud_dir_overrides(tmp_path: Path) -> None:
    provider = create_provider("mock", Settings(mock_cloud_dir=str(tmp_path / "elsewhere")))
    assert isinstance(provider, MockCloud)
    assert provider.state_dir == tmp_path.resolve() / "elsewhere"


def test_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown provider code 'aws'"):
        create_provider("aws", Settings())
