"""create_provider: one place that builds every cloud from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventiv.settings import Settings
from providers.base import InvalidRequest
from providers.mock.cloud import MockCloud
from providers.registry import create_provider
from providers.scaleway.provider import ScalewayProvider


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


@pytest.mark.parametrize(
    ("key", "project", "missing"),
    [
        (None, "p", "SCW_SECRET_KEY"),
        ("k", None, "SCW_DEFAULT_PROJECT_ID"),
        (None, None, "SCW_SECRET_KEY and SCW_DEFAULT_PROJECT_ID"),
        ("", "p", "SCW_SECRET_KEY"),
    ],
)
def test_scaleway_needs_credentials(key: str | None, project: str | None, missing: str) -> None:
    settings = Settings(scw_secret_key=key, scw_default_project_id=project)
    with pytest.raises(InvalidRequest, match=f"needs {missing} ") as caught:
        create_provider("scaleway", settings)
    assert caught.value.code == "PROVIDER_NOT_CONFIGURED"


async def test_scaleway_from_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    env = {"SCW_SECRET_KEY_FILE": str(secret), "SCW_DEFAULT_PROJECT_ID": "proj", "SCW_API_URL": "http://127.0.0.1:9/"}
    provider = create_provider("scaleway", Settings.from_env(env))
    assert isinstance(provider, ScalewayProvider) and provider.code == "scaleway"
    assert provider.project_id == "proj" and provider.client.api_url == "http://127.0.0.1:9"
    await provider.close()


def test_scaleway_api_url_defaults_to_the_real_one() -> None:
    assert Settings.from_env({}).scw_api_url == "https://api.scaleway.com"
