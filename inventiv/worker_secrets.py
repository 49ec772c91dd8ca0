"""Per-instance worker secrets: the engine's API key, and the credential its agent presents back.

Each instance's secret is derived from one server-side key, HMAC-SHA256(key, "inventiv-worker:" +
instance id), so none is stored: the gateway derives it to call a worker and to check a heartbeat, the
scheduler to boot a server with it and to probe it. Knowing one worker's secret tells nothing about
another's. The key is `INVENTIV_WORKER_SECRET_KEY` (or `_FILE`); on the embedded default, where one
machine runs everything, it is generated once into the data folder (0600) and shared by every command.
Rotating the key changes every secret: running workers then answer 401, are marked unhealthy and get no
traffic until replaced.

A secret never goes into logs, action logs, API responses or metrics; it travels only in the
`Authorization` header to its worker and in the worker's root-only boot configuration.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from inventiv.settings import Settings, SettingsError

# A key shorter than this is a password, not a key: 32 characters of base64 carry 192 bits.
MIN_KEY_LENGTH = 32
KEY_FILE_NAME = "worker-secret.key"
_CONTEXT = b"inventiv-worker:"


class WorkerSecrets:
    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise SettingsError(f"INVENTIV_WORKER_SECRET_KEY must be at least {MIN_KEY_LENGTH} characters")
        self._key = key.encode()

    def __repr__(self) -> str:
        return "WorkerSecrets(<key hidden>)"

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one per process, bounded; entries are tiny
    def for_instance(self, instance_id: str) -> str:
        """The instance's secret: 43 URL-safe characters, usable as any engine's API key."""
        digest = hmac.new(self._key, _CONTEXT + str(instance_id).lower().encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def authorization(self, instance_id: str) -> str:
        return f"Bearer {self.for_instance(instance_id)}"

    def matches(self, instance_id: str, presented: str) -> bool:
        """Whether `presented` is this instance's secret, compared in constant time."""
        return hmac.compare_digest(self.for_instance(instance_id).encode(), presented.encode())


def worker_secrets(settings: Settings) -> WorkerSecrets:
    """The secrets of this installation; a configuration without a key is refused with one line."""
    if settings.worker_secret_key is None:
        raise SettingsError(
            "INVENTIV_WORKER_SECRET_KEY (or INVENTIV_WORKER_SECRET_KEY_FILE) must be set: each worker's API key "
            "is derived from it, and the gateway and the scheduler must share it (e.g. `openssl rand -base64 48`)"
        )
    return WorkerSecrets(settings.worker_secret_key)


def embedded_key(data_dir: Path) -> str:
    """The key of the embedded default: read from the data folder, or made there once (owner-only)."""
    path = data_dir / KEY_FILE_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two commands starting at once on one data folder must not write two keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key
