"""The control API: deployments, instances and volumes, action logs, API keys, catalog, usage."""

from __future__ import annotations

from aiohttp import web


def setup_control_api(app: web.Application) -> None:
    """Register the control API's routes on the gateway app."""
