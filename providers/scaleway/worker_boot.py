"""What a Scaleway worker boots with: the cloud-init user data for its model, engine and secret.

A server created for a model carries `model=<repo id>` and `engine=<name>` tags, set by the create call
itself, so the user data can be rebuilt for a server that was adopted before it was ever written (see
the provider's module docstring): its secret is derived again from its `instance=` tag, never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from inventiv.settings import Settings
from inventiv.worker_secrets import WorkerSecrets, worker_secrets
from providers.base import InvalidRequest, ServerSpec
from providers.scaleway.cloud_init import AgentBoot, WorkerBoot, worker_cloud_config
from worker.engines import DEFAULT_ENGINE, engine

MODEL_TAG = "model="
ENGINE_TAG = "engine="
INSTANCE_TAG = "instance="
# Host port of the worker: instance_types.worker_port's default, which the scheduler health-checks.
# ServerSpec carries no port, so a Scaleway type with another worker_port would need one added there.
WORKER_PORT = 8000
# Where Scaleway's sbs volumes appear (udev by-id links): a local scratch disk, wiped at power-off,
# is never taken for the data volume. The root volume matches too; the boot script skips it.
DATA_DEVICES = "/dev/disk/by-id/scsi-0SCW_sbs_volume-*"


def tagged(tags: Sequence[str], prefix: str) -> str | None:
    """The value of the first `prefix<value>` tag, or None."""
    for tag in tags:
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    return None


@dataclass(frozen=True)
class WorkerBootConfig:
    """The installation's side of every worker's boot: images, secrets, the agent."""

    secrets: WorkerSecrets | None
    settings: Settings = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerBootConfig:
        # Without a key a server can still be created with the secret the scheduler passes in its spec;
        # only an adopted server's user data needs the key, and says so.
        return cls(worker_secrets(settings) if settings.worker_secret_key else None, settings)

    @staticmethod
    def tags(spec: ServerSpec) -> list[str]:
        if not spec.model:
            return list(spec.tags)
        return [*spec.tags, MODEL_TAG + spec.model, ENGINE_TAG + spec.engine]

    def for_spec(self, spec: ServerSpec) -> str | None:
        """The user data of a new server; None for one created without a model (it serves nothing)."""
        if not spec.model:
            return None
        return self._user_data(spec.model, spec.engine, tagged(spec.tags, INSTANCE_TAG), spec.worker_secret)

    def for_model_tags(self, tags: Sequence[str]) -> str:
        """The user data of an adopted server created for a model, from its tags."""
        model = tagged(tags, MODEL_TAG)
        if model is None:
            raise InvalidRequest("cannot boot a Scaleway worker: the server carries no model= tag")
        return self._user_data(model, tagged(tags, ENGINE_TAG) or DEFAULT_ENGINE, tagged(tags, INSTANCE_TAG), None)

    def _user_data(self, model: str, engine_name: str, instance_id: str | None, secret: str | None) -> str:
        settings = self.settings
        if secret is None:
            secret = self._derived(instance_id)
        try:
            chosen = engine(engine_name)
            boot = WorkerBoot(
                model=model, engine=chosen, image=settings.engine_image(chosen.name) or "", port=WORKER_PORT,
                secret=secret, data_device_hint=DATA_DEVICES, hf_token=settings.hf_token,
                agent=self._agent(instance_id),
            )  # fmt: skip
            return worker_cloud_config(boot)
        except ValueError as exc:  # CloudInitError, or an unknown engine
            raise InvalidRequest(f"cannot boot a Scaleway worker: {exc}") from None

    def _derived(self, instance_id: str | None) -> str:
        if self.secrets is None or instance_id is None:
            raise InvalidRequest(
                "cannot boot a Scaleway worker: no worker secret (INVENTIV_WORKER_SECRET_KEY is unset, or the "
                "server carries no instance= tag)"
            )
        return self.secrets.for_instance(instance_id)

    def _agent(self, instance_id: str | None) -> AgentBoot | None:
        settings = self.settings
        if not (settings.agent_gateway_url and settings.agent_image and instance_id):
            return None
        return AgentBoot(settings.agent_gateway_url.rstrip("/"), settings.agent_image, instance_id,
                         settings.agent_interval_s)  # fmt: skip
