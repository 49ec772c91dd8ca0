"""Build the provider for a `providers.code` from the settings: the one place that knows every cloud."""

from __future__ import annotations

from inventiv.settings import Settings
from providers.base import Provider

KNOWN = ("mock",)


def create_provider(code: str, settings: Settings) -> Provider:
    """The provider for `code`; ValueError for a code no implementation serves."""
    if code == "mock":
        from providers.mock.cloud import MockCloud

        return MockCloud(settings.mock_cloud_path)
    raise ValueError(f"unknown provider code {code!r}; known: {', '.join(KNOWN)}")
