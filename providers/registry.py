"""Build the provider for a `providers.code` from the settings: the one place that knows every cloud."""

from __future__ import annotations

from inventiv.settings import Settings
from providers.base import Provider

KNOWN = ("mock", "scaleway")


def create_provider(code: str, settings: Settings) -> Provider:
    """The provider for `code`. ValueError for a code no implementation serves; `InvalidRequest`
    (code PROVIDER_NOT_CONFIGURED) when Scaleway's key or project id is missing."""
    if code == "mock":
        from providers.mock.cloud import MockCloud

        return MockCloud(settings.mock_cloud_path)
    if code == "scaleway":
        from providers.scaleway.provider import ScalewayProvider

        return ScalewayProvider.from_settings(settings)
    raise ValueError(f"unknown provider code {code!r}; known: {', '.join(KNOWN)}")
