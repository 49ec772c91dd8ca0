"""Settings from the environment, as one frozen dataclass.

Every field reads `INVENTIV_<FIELD>` (or the name in its metadata), and `<NAME>_FILE` for secrets: the
value is then read from that file. Layering, lowest first: defaults < local `.env` < process environment
< an env file given explicitly. When an env file is given explicitly the local `.env` is not read at
all, so a developer's `.env` can never leak into a chosen environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from dotenv import dotenv_values

from worker.engines import ENGINES, EngineName


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and fits on one line."""


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclass(frozen=True)
class Settings:
    # Services. None means "start the embedded default under data_dir".
    database_url: str | None = None
    redis_url: str | None = None
    # Every Redis key starts with this, so several deployments (or test sessions) share one Redis.
    redis_prefix: str = "inventiv:"
    data_dir: str = ".inventiv"

    # Gateway.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8003
    # 0 = one process per core.
    gateway_workers: int = 0
    # Chat requests with long contexts reach a few MiB; 16 MiB leaves room and still bounds memory.
    max_body_bytes: int = 16 * 1024 * 1024
    # A worker whose last heartbeat is older than this gets no traffic (DESIGN: 5 minutes).
    worker_stale_after_s: float = 300.0
    # Sliding TTL of a session pin: a conversation idle for longer may land elsewhere.
    affinity_ttl_s: int = 1800
    upstream_connect_timeout_s: float = 5.0
    # Non-streaming generations send nothing until done; 10 minutes covers long completions.
    upstream_first_byte_timeout_s: float = 600.0
    # Streams in flight get this long to finish after SIGTERM.
    drain_timeout_s: float = 30.0
    # A client's request head must arrive within this from its first byte (slowloris); an SDK sends
    # one in milliseconds.
    header_timeout_s: float = 10.0
    # A request body must arrive within this (408 past it): a few MiB of chat history takes well under
    # a second on any real link; 30 s still admits a 16 MiB body at about 560 KB/s.
    body_timeout_s: float = 30.0
    # An idle keep-alive connection is closed after this. Longer than the idle timeouts of the load
    # balancers that keep connections to us (AWS ALB and nginx: 60 s), so they close first and never
    # reuse a connection just as we drop it; aiohttp's own default is 3630 s.
    keepalive_timeout_s: float = 75.0
    # How often each gateway process reloads keys, catalog and ready workers from Postgres (changes
    # published on Redis reload at once): revoked keys must stop working within 2 s, and the
    # ready-worker view must be at most a second old.
    routing_refresh_s: float = 1.0
    # One structured line per inference request on the `gateway.access` logger (gateway/tracing.py).
    access_log: bool = True
    # Usage records each gateway process keeps while Redis is unreachable, in bytes (about 570 a record):
    # 64 MiB holds some 115,000, minutes of a heavy load; past it the oldest are dropped and counted.
    usage_buffer_max_bytes: int = 64 * 1024 * 1024
    # "buffered": a record reaches Redis within 50 ms of its answer (a gateway killed outright loses
    # that window's). "durable": an answer ends only once its record is in Redis (gateway/usage_recorder.py).
    usage_durability: str = "buffered"
    # A console session ends after this long without a request (sliding): a working day, so an operator
    # signs in once a day and a forgotten browser does not stay signed in for long.
    console_session_ttl_s: int = 8 * 3600

    # The key every worker's secret (its engine's API key) is derived from; the gateway and the scheduler
    # must share it. None: generated into the data folder on the embedded default, required otherwise.
    worker_secret_key: str | None = field(default=None, repr=False)

    # Scheduler.
    deployment_tag: str = "inventiv"
    worker_data_volume_gb: int | None = field(default=None, metadata=_env("WORKER_DATA_VOLUME_GB"))
    scheduler_tick_s: float = 2.0
    health_interval_s: float = 5.0
    reconcile_interval_s: float = 60.0
    orphan_sweep_interval_s: float = 300.0
    orphan_grace_s: float = 900.0
    orphan_dry_run: bool = False
    provisioning_deadline_s: float = 1800.0
    # A worker that fails this many health checks in a row gets no traffic until it answers again.
    worker_health_failures: int = 3
    # Each health request (/health, /v1/models, /metrics); short, so one hung worker cannot stall a poll.
    health_timeout_s: float = 3.0
    # Transient cloud errors: the first retry waits this long, doubling per attempt up to the cap, jittered.
    scheduler_retry_base_s: float = 2.0
    scheduler_retry_max_s: float = 60.0
    # A claim on an instance lasts this long unless its pass renews it (every third of it, while it runs):
    # a crashed scheduler's instances are picked up again within it.
    scheduler_lease_s: float = 60.0
    # The longest pause between two looks at an instance waiting on the cloud or its worker (a booting
    # GPU server): waits are polled at a tenth of their length so far, up to this (scheduler/pacing.py).
    scheduler_poll_max_s: float = 15.0
    # The scheduler's Prometheus /metrics (scheduler/metrics.py), on INVENTIV_GATEWAY_HOST; 0: not served.
    scheduler_metrics_port: int = 8004
    # A ready instance whose worker has not answered for this long (stale or unhealthy all along) is dead:
    # terminated, and replaced when its deployment asked (scheduler/replacement.py). Five minutes past the
    # gateway's staleness limit: a worker that misses traffic for a blip or a restart is not killed for it.
    worker_dead_after_s: float = 600.0
    # Replacements of one deployment (a chain of instances replacing each other) per rolling hour; past it a
    # crash-looping model or machine is left terminated for an operator instead of burning GPU hours.
    replacements_per_hour: int = 3

    # Providers. Scaleway credentials use Scaleway's own variable names, as its CLI and SDKs do.
    scw_secret_key: str | None = field(default=None, repr=False, metadata=_env("SCW_SECRET_KEY"))
    scw_default_project_id: str | None = field(default=None, metadata=_env("SCW_DEFAULT_PROJECT_ID"))
    # Tests point this at a local fake of the API.
    scw_api_url: str = field(default="https://api.scaleway.com", metadata=_env("SCW_API_URL"))
    # First retry delay of a failed Scaleway call (doubled each time, capped); tests against the fake
    # server lower it so random 5xx do not make them sleep.
    scw_retry_base_s: float = 1.0
    # Root volume of a diskless Scaleway worker, GB: the GPU OS image's own 20 GB cannot also hold the
    # worker image (vLLM's is over 10 GB unpacked) and Docker's layers; model weights go to the data volume.
    scw_worker_root_volume_gb: int = 100
    # Who may reach a Scaleway worker: comma-separated IPv4/IPv6 networks. Every worker joins a security group
    # that drops all inbound traffic except the worker port from these (the scheduler's and the gateways'
    # egress addresses) and SSH from the second list; never the whole internet. A public worker is refused
    # without the first (providers/scaleway/network.py).
    scw_worker_allowed_cidrs: str | None = None
    scw_ssh_allowed_cidrs: str | None = None
    # A Private Network (VPC) for the workers: set, they get no public IP and are reached at their private one.
    scw_private_network_id: str | None = None
    # State of the mock cloud (its servers are local worker processes); None: <data_dir>/mock-cloud.
    mock_cloud_dir: str | None = None

    # Workers. The container each inference engine runs in (worker/engines.py), pinned: a moving tag
    # would give one fleet several servers. The generic `openai` engine has no default image.
    vllm_image: str = ENGINES[EngineName.VLLM].default_image
    sglang_image: str = ENGINES[EngineName.SGLANG].default_image
    llama_cpp_image: str = ENGINES[EngineName.LLAMA_CPP].default_image
    openai_image: str | None = None
    # Hugging Face token for gated models: reaches each worker in a root-only file, never a log.
    hf_token: str | None = field(default=None, repr=False)
    # The worker agent (`inventiv agent`) beside each engine pushes heartbeats to this gateway URL, run
    # from this image (deploy/Dockerfile's, pushed to a registry the workers reach); without both,
    # workers are polled by the scheduler only.
    agent_gateway_url: str | None = None
    agent_image: str | None = None
    # Seconds between two heartbeats of an agent; the scheduler polls a worker whose agent missed three.
    agent_interval_s: float = 10.0

    # Logging: "json" lines, "kv" (key=value for a terminal) or "auto" (kv on a tty, else json).
    log_format: str = "auto"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env", f"INVENTIV_{f.name.upper()}")
            raw = _read(env, name)
            if raw is not None:
                values[f.name] = _convert(name, raw, hints[f.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.usage_durability not in ("buffered", "durable"):
            raise SettingsError(f"INVENTIV_USAGE_DURABILITY must be buffered or durable, not {self.usage_durability!r}")
        if self.log_format not in ("auto", "json", "kv"):
            raise SettingsError(f"INVENTIV_LOG_FORMAT must be auto, json or kv, not {self.log_format!r}")
        if not 0 < self.gateway_port < 65536:
            raise SettingsError(f"INVENTIV_GATEWAY_PORT must be 1-65535, not {self.gateway_port}")
        for url, name, schemes in (
            (self.database_url, "INVENTIV_DATABASE_URL", ("postgresql://", "postgres://")),
            (self.redis_url, "INVENTIV_REDIS_URL", ("redis://", "rediss://", "unix://")),
        ):
            if url is not None and not url.startswith(schemes):
                raise SettingsError(f"{name} must start with {' or '.join(schemes)}")
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"INVENTIV_{name.upper()} must be positive, not {getattr(self, name)}")
        self._validate_scheduler()
        self._validate_scaleway()
        self._validate_workers()

    def _validate_scheduler(self) -> None:
        # A zero interval or timeout would spin or give up at once.
        for name in _SCHEDULER_DURATIONS:
            if getattr(self, name) <= 0:
                raise SettingsError(f"INVENTIV_{name.upper()} must be positive, not {getattr(self, name)}")
        failures, volume_gb = self.worker_health_failures, self.worker_data_volume_gb
        if failures < 1:
            raise SettingsError(f"INVENTIV_WORKER_HEALTH_FAILURES must be at least 1, not {failures}")
        if self.replacements_per_hour < 0:
            raise SettingsError(f"INVENTIV_REPLACEMENTS_PER_HOUR must be 0 or more, not {self.replacements_per_hour}")
        if volume_gb is not None and volume_gb < 0:
            raise SettingsError(f"WORKER_DATA_VOLUME_GB must be 0 (no data volume) or more, not {volume_gb}")

    def _validate_scaleway(self) -> None:
        # Parsed once here so a bad or world-open network stops the command, not the first server create.
        parse_cidrs("INVENTIV_SCW_WORKER_ALLOWED_CIDRS", self.scw_worker_allowed_cidrs)
        parse_cidrs("INVENTIV_SCW_SSH_ALLOWED_CIDRS", self.scw_ssh_allowed_cidrs)
        network = self.scw_private_network_id
        if network is not None and not _is_uuid(network):
            raise SettingsError(f"INVENTIV_SCW_PRIVATE_NETWORK_ID must be a Private Network id (UUID), not {network!r}")

    def _validate_workers(self) -> None:
        url = self.agent_gateway_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise SettingsError(f"INVENTIV_AGENT_GATEWAY_URL must start with http:// or https://, not {url!r}")
        if self.agent_interval_s <= 0:
            raise SettingsError(f"INVENTIV_AGENT_INTERVAL_S must be positive, not {self.agent_interval_s}")
        key = self.worker_secret_key
        if key is not None and len(key) < 32:
            raise SettingsError("INVENTIV_WORKER_SECRET_KEY must be at least 32 characters")

    @property
    def scw_worker_cidrs(self) -> tuple[str, ...]:
        return parse_cidrs("INVENTIV_SCW_WORKER_ALLOWED_CIDRS", self.scw_worker_allowed_cidrs)

    @property
    def scw_ssh_cidrs(self) -> tuple[str, ...]:
        return parse_cidrs("INVENTIV_SCW_SSH_ALLOWED_CIDRS", self.scw_ssh_allowed_cidrs)

    def engine_image(self, engine: str) -> str | None:
        """The image that runs `engine`; None for the generic engine when no image is set."""
        images = {
            EngineName.VLLM: self.vllm_image, EngineName.SGLANG: self.sglang_image,
            EngineName.LLAMA_CPP: self.llama_cpp_image, EngineName.OPENAI: self.openai_image,
        }  # fmt: skip
        return images[EngineName(engine)]

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def mock_cloud_path(self) -> Path:
        if self.mock_cloud_dir is None:
            return self.data_path / "mock-cloud"
        return Path(self.mock_cloud_dir).expanduser().resolve()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_SCHEDULER_DURATIONS = (
    "scheduler_tick_s", "health_interval_s", "reconcile_interval_s", "orphan_sweep_interval_s",
    "provisioning_deadline_s", "health_timeout_s", "scheduler_retry_base_s", "scheduler_retry_max_s",
    "scheduler_lease_s", "scheduler_poll_max_s",
    "worker_dead_after_s",
)  # fmt: skip


def parse_cidrs(name: str, raw: str | None) -> tuple[str, ...]:
    """The networks of a comma-separated list, normalised (`203.0.113.7` -> `203.0.113.7/32`).

    A network with host bits set is refused rather than widened: `10.0.0.1/8` is more likely a typo than a
    wish to open 16 million addresses. So is any /0: these lists exist to keep workers off the internet.
    """
    networks: list[str] = []
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        network = _network(name, item)
        if network.prefixlen == 0:
            raise SettingsError(f"{name}: {network} opens the worker to the whole internet; list narrower networks")
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


def _network(name: str, item: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(item)
    except ValueError:
        pass
    try:
        widened = ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise SettingsError(f"{name}: {item!r} is not an IPv4 or IPv6 network (CIDR)") from None
    raise SettingsError(f"{name}: {item} has host bits set; did you mean {widened}?")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _read(env: Mapping[str, str], name: str) -> str | None:
    direct = env.get(name)
    path = env.get(f"{name}_FILE")
    if direct is not None and path is not None:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if path is None:
        return direct if direct != "" else None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def _convert(name: str, raw: str, hint: Any) -> Any:
    kinds = [t for t in getattr(hint, "__args__", (hint,)) if t is not type(None)]
    kind = kinds[0]
    try:
        if kind is bool:
            return _parse_bool(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, not {raw!r}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def load_environment(env_file: str | None, cwd: Path | None = None) -> dict[str, str]:
    """The merged environment the settings are read from (see the module docstring for the order)."""
    merged: dict[str, str] = {}
    if env_file is None:
        local = (cwd or Path.cwd()) / ".env"
        if local.is_file():
            merged.update(_values(local))
    merged.update(os.environ)
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise SettingsError(f"--env-file {env_file}: no such file")
        merged.update(_values(path))
    return merged


def _values(path: Path) -> dict[str, str]:
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        name = f.metadata.get("env", f"INVENTIV_{f.name.upper()}")
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
