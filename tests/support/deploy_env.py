"""Env files of the control-plane VM for tests (`inventiv deploy`), read back through the real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventiv.deploy.vm_settings import VmSettings, load
from providers.scaleway.client import RetryPolicy, ScalewayClient

# A type the fake's Ubuntu image boots: PRO2-XS has no local disk (sbs root), DEV1-M has one (up to 40 GB).
SBS_TYPE = "PRO2-XS"
LOCAL_TYPE = "DEV1-M"


def write_env(folder: Path, env: str = "prod", **values: Any) -> Path:
    """deploy/env/<env>.env under `folder`: every required setting, overridden (or dropped, with None) by `values`."""
    settings: dict[str, Any] = {
        "DEPLOY_ENV": env,
        "SCW_SECRET_KEY": "test-secret-key",
        "SCW_DEFAULT_PROJECT_ID": "105bdce1-64c0-48ab-899d-868455867ecf",
        "SCW_DEFAULT_ZONE": "fr-par-1",
        "SCW_COMMERCIAL_TYPE": SBS_TYPE,
        "SCW_ROOT_VOLUME_SIZE_GB": 40,
        "SSH_ALLOWED_CIDRS": "198.51.100.0/24",
        "DOMAIN": f"{env}.inventiv.example.com",
        "DEPLOY_IMAGE": "registry.example.com/inventiv:0.1.0",
        **values,
    }
    path = folder / "deploy" / "env" / f"{env}.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items() if v is not None))
    return path


def settings_for(folder: Path, env: str = "prod", **values: Any) -> VmSettings:
    return load(env, str(write_env(folder, env, **values)))


def fake_client(fake: Any) -> ScalewayClient:
    """A client of the fake Scaleway that never waits: retries and polls pause for nothing."""

    async def no_sleep(_: float) -> None:
        return None

    return ScalewayClient(fake.secret_key, fake.url, retry=RetryPolicy(base_s=0.001), sleep=no_sleep)


def fake_values(fake: Any) -> dict[str, Any]:
    """The env file values that point the commands at the fake."""
    return {"SCW_API_URL": fake.url, "SCW_SECRET_KEY": fake.secret_key, "SCW_DEFAULT_PROJECT_ID": fake.project_id}
