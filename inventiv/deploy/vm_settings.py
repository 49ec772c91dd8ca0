"""Settings of the control-plane VM, as one frozen dataclass read from `deploy/env/<env>.env`.

The env file is always given explicitly (`--env-file`, else `deploy/env/<env>.env`), so through
`load_environment` it wins over the process environment and a local `.env` is not read at all: a
developer's `.env` with another SECRETS_DIR can never send prod secrets to the wrong folder. The file says
which environment it is (DEPLOY_ENV); a file for another environment is refused. Relative paths in it
(SECRET_FILES, SSH_KEY_FILE) are relative to the file's own folder, not to wherever the command runs.

Everything here is checked before any cloud call, and each error names the setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, get_type_hints

from inventiv.deploy.errors import DeployError
from inventiv.settings import SettingsError, load_environment, parse_cidrs

ENVIRONMENTS = ("staging", "prod")
DEFAULT_ENV_DIR = Path("deploy/env")
# Scaleway creates a 10 GB root when none is asked for, and its Ubuntu images need that much: a smaller root
# is refused by the API, and 10 GB is already too small for Docker's images and Postgres.
IMAGE_ROOT_GB = 10
# Root volume kinds: Block Storage (resized online through the Block API) or local (Instance API, stopped).
ROOT_VOLUME_TYPES = ("sbs_volume", "l_ssd")
# What may follow `<name>=` in a remote path or a Compose variable: no quoting is ever needed.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_IMAGE = re.compile(r"[A-Za-z0-9._/:@-]+")
_SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclass(frozen=True)
class VmSettings:
    env: str = field(metadata=_env("DEPLOY_ENV"))
    scw_secret_key: str = field(repr=False, metadata=_env("SCW_SECRET_KEY"))
    scw_default_project_id: str = field(metadata=_env("SCW_DEFAULT_PROJECT_ID"))
    root_volume_size_gb: int = field(metadata=_env("SCW_ROOT_VOLUME_SIZE_GB"))
    # Who may reach SSH (22 or SSH_PORT): comma-separated networks, never the whole internet.
    ssh_allowed_cidrs: str = field(metadata=_env("SSH_ALLOWED_CIDRS"))
    # The public name Caddy gets certificates for; its DNS record points at the VM's address.
    domain: str = field(metadata=_env("DOMAIN"))
    # The inventiv image the VM pulls (deploy/Dockerfile's, pushed to a registry the VM reaches).
    image: str = field(metadata=_env("DEPLOY_IMAGE"))
    scw_api_url: str = field(default="https://api.scaleway.com", metadata=_env("SCW_API_URL"))
    zone: str = field(default="fr-par-1", metadata=_env("SCW_DEFAULT_ZONE"))
    commercial_type: str = field(default="PRO2-S", metadata=_env("SCW_COMMERCIAL_TYPE"))
    image_label: str = field(default="ubuntu_noble", metadata=_env("SCW_IMAGE"))
    root_volume_type: str = field(default="sbs_volume", metadata=_env("SCW_ROOT_VOLUME_TYPE"))
    ssh_port: int = field(default=22, metadata=_env("SSH_PORT"))
    # Scaleway's Ubuntu images let root in with the project's SSH keys.
    ssh_user: str = field(default="root", metadata=_env("SSH_USER"))
    ssh_key_file: str | None = field(default=None, metadata=_env("SSH_KEY_FILE"))
    # Where the secrets land on the VM, owned by root, group CONTAINER_GID, mode 0640.
    secrets_dir: str = field(default="/etc/inventiv/secrets", metadata=_env("SECRETS_DIR"))
    # Local secret files (comma-separated; relative to the env file's folder), each pushed under its own name.
    secret_files: str = field(default="", metadata=_env("SECRET_FILES"))
    # The secret that is Compose's `.env` on the VM (POSTGRES_PASSWORD, SCW_*, INVENTIV_WORKER_SECRET_KEY...).
    compose_env_secret: str = field(default="inventiv.env", metadata=_env("COMPOSE_ENV_SECRET"))
    # deploy/Dockerfile's user and group: the containers read the secrets as them.
    container_uid: int = field(default=10001, metadata=_env("CONTAINER_UID"))
    container_gid: int = field(default=10001, metadata=_env("CONTAINER_GID"))
    deploy_dir: str = field(default="/opt/inventiv", metadata=_env("DEPLOY_DIR"))
    # Where `up` checks health; default https://DOMAIN. A first certificate takes Caddy tens of seconds.
    health_url: str | None = field(default=None, metadata=_env("HEALTH_URL"))
    health_timeout_s: float = field(default=300.0, metadata=_env("HEALTH_TIMEOUT_S"))
    # Which file these came from: relative paths in it are resolved against its folder.
    source: Path = field(default=Path("."), metadata={"env": ""})

    @classmethod
    def from_env(cls, env: Mapping[str, str], source: Path, expected_env: str) -> VmSettings:
        hints = get_type_hints(cls)
        values: dict[str, Any] = {"source": source}
        missing = []
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if not name:
                continue
            raw = _read(env, name)
            if raw is not None:
                values[f.name] = _convert(name, raw, hints[f.name])
            elif f.default is dataclasses.MISSING:
                missing.append(name)
        if missing:
            raise DeployError(f"{source}: missing {', '.join(missing)}")
        settings = cls(**values)
        settings.validate(expected_env)
        return settings

    def validate(self, expected_env: str) -> None:
        if self.env != expected_env:
            raise DeployError(f"{self.source}: DEPLOY_ENV is {self.env!r}, not {expected_env!r}: wrong env file")
        if self.root_volume_size_gb < IMAGE_ROOT_GB:
            raise DeployError(
                f"SCW_ROOT_VOLUME_SIZE_GB={self.root_volume_size_gb} is below the image's {IMAGE_ROOT_GB} GB root"
            )
        if self.root_volume_type not in ROOT_VOLUME_TYPES:
            raise DeployError(f"SCW_ROOT_VOLUME_TYPE must be one of {', '.join(ROOT_VOLUME_TYPES)}")
        try:
            cidrs = self.ssh_cidrs
        except SettingsError as exc:
            raise DeployError(str(exc)) from None
        if not cidrs:
            raise DeployError("SSH_ALLOWED_CIDRS must list the networks that may reach SSH")
        for name, value in (("SECRETS_DIR", self.secrets_dir), ("DEPLOY_DIR", self.deploy_dir)):
            if not _SAFE_PATH.fullmatch(value) or ".." in PurePosixPath(value).parts or value.rstrip("/") == "":
                raise DeployError(f"{name} must be an absolute path of [A-Za-z0-9._/-], not {value!r}")
        if not _DOMAIN.fullmatch(self.domain):
            raise DeployError(f"DOMAIN must be a DNS name, not {self.domain!r}")
        if not _IMAGE.fullmatch(self.image):
            raise DeployError(f"DEPLOY_IMAGE {self.image!r} holds characters outside {_IMAGE.pattern}")
        if not 0 < self.ssh_port < 65536:
            raise DeployError(f"SSH_PORT must be 1-65535, not {self.ssh_port}")
        self._validate_secrets()

    def _validate_secrets(self) -> None:
        names = [path.name for path in self.secret_paths]
        for path in self.secret_paths:
            if not _SECRET_NAME.fullmatch(path.name):
                raise DeployError(f"SECRET_FILES: {path.name!r} is not a plain file name ([A-Za-z0-9._-])")
            if not path.is_file():
                raise DeployError(f"SECRET_FILES: {path} does not exist or is not a file")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DeployError(f"SECRET_FILES: two files named {', '.join(duplicates)} would land on the same path")
        if names and self.compose_env_secret not in names:
            raise DeployError(f"SECRET_FILES holds no {self.compose_env_secret} (COMPOSE_ENV_SECRET): Compose needs it")
        if self.ssh_key_file is not None and not self.ssh_key_path.is_file():
            raise DeployError(f"SSH_KEY_FILE: {self.ssh_key_path} does not exist")

    def require_for(self, command: str) -> None:
        """What a command needs beyond the common settings, checked before its first cloud call."""
        if command in ("secrets", "up", "rebuild") and self.ssh_key_file is None:
            raise DeployError(f"{self.source}: SSH_KEY_FILE is not set; `{command}` logs in to the VM with it")
        if command in ("secrets", "rebuild") and not self.secret_paths:
            raise DeployError(f"{self.source}: SECRET_FILES lists no file; `{command}` would push nothing")

    @property
    def ssh_cidrs(self) -> tuple[str, ...]:
        return parse_cidrs("SSH_ALLOWED_CIDRS", self.ssh_allowed_cidrs)

    @property
    def secret_paths(self) -> list[Path]:
        items = [item.strip() for item in self.secret_files.split(",") if item.strip()]
        return [self._local(item) for item in items]

    @property
    def ssh_key_path(self) -> Path:
        if self.ssh_key_file is None:
            raise DeployError(f"{self.source}: SSH_KEY_FILE is not set")
        return self._local(self.ssh_key_file)

    def _local(self, item: str) -> Path:
        path = Path(item).expanduser()
        return path if path.is_absolute() else self.source.parent / path

    @property
    def name(self) -> str:
        """The server's (and its security group's) name."""
        return f"inventiv-control-plane-{self.env}"

    @property
    def tags(self) -> tuple[str, ...]:
        """What marks this env's resources: found, adopted and destroyed by these, never by name alone."""
        return ("inventiv-control-plane", f"env={self.env}")

    @property
    def root_bytes(self) -> int:
        # Scaleway sizes volumes in bytes with decimal GB (SCALEWAY.md: 1 GB to 10 TB).
        return self.root_volume_size_gb * 10**9

    @property
    def health_base_url(self) -> str:
        return (self.health_url or f"https://{self.domain}").rstrip("/")

    def remote_secret(self, name: str) -> str:
        return str(PurePosixPath(self.secrets_dir) / name)


def load(env_name: str, env_file: str | None) -> VmSettings:
    """The settings of `env_name`, from `env_file` (default deploy/env/<env>.env)."""
    if env_name not in ENVIRONMENTS:
        raise DeployError(f"unknown env {env_name!r}: one of {', '.join(ENVIRONMENTS)}")
    path = Path(env_file) if env_file is not None else DEFAULT_ENV_DIR / f"{env_name}.env"
    if not path.is_file():
        raise DeployError(f"no env file {path}: copy {DEFAULT_ENV_DIR}/{env_name}.env.example and fill it in")
    try:
        env = load_environment(str(path))
    except SettingsError as exc:
        raise DeployError(str(exc)) from None
    return VmSettings.from_env(env, path.resolve(), env_name)


def env_names() -> set[str]:
    """Every variable an env file may set."""
    return {f.metadata["env"] for f in dataclasses.fields(VmSettings) if f.metadata["env"]}


def _read(env: Mapping[str, str], name: str) -> str | None:
    direct, path = env.get(name), env.get(f"{name}_FILE")
    if direct and path:
        raise DeployError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise DeployError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return direct or None


def _convert(name: str, raw: str, hint: Any) -> Any:
    kind = next(t for t in getattr(hint, "__args__", (hint,)) if t is not type(None))
    try:
        return kind(raw)
    except ValueError:
        raise DeployError(f"{name} must be a {kind.__name__}, not {raw!r}") from None
