"""Real Scaleway traffic, loaded at run time from the recordings the repository carries.

The recordings live in `tests/support/reference/scaleway/` (see its README.md):
`recorded_bodies.json` (trimmed bodies by name) and `l40s_server_lifecycle.cassette.yaml` (48 HTTP
exchanges of a real L40S create -> poweron -> terminate -> volume cleanup). Every accessor returns a
fresh deep copy, so a test may change what it gets.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REFERENCE_DIR = Path(__file__).resolve().parent / "reference" / "scaleway"
BODIES_FILE = REFERENCE_DIR / "recorded_bodies.json"
CASSETTE_FILE = REFERENCE_DIR / "l40s_server_lifecycle.cassette.yaml"

# Ids in the recordings.
SERVER_ID = "6bc4b49b-bd60-4d64-8ffc-9346f18ef88b"
BOOT_VOLUME_ID = "84500127-2893-4a3f-8790-dcf9e8e6213f"
SCRATCH_VOLUME_ID = "74d989f0-2053-49db-8e91-9208237eef67"
GPU_IMAGE_ID = "8063548b-7ade-4faa-8be1-f48f8d3ba3ea"
GPU_IMAGE_NAME = "Ubuntu Jammy GPU OS 12 passthrough"
GPU_IMAGE_LABEL = "ubuntu_jammy_gpu_os_12"
PROJECT_ID = "105bdce1-64c0-48ab-899d-868455867ecf"
ZONE = "fr-par-2"


@dataclass(frozen=True)
class Exchange:
    id: int
    method: str
    url: str
    request_body: Any
    status: int
    headers: dict[str, str]
    body: Any


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recorded Scaleway traffic missing from the checkout")
    return path


@functools.cache
def _bodies() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_require(BODIES_FILE).read_text())
    return loaded


@functools.cache
def _exchanges() -> tuple[Exchange, ...]:
    doc = yaml.safe_load(_require(CASSETTE_FILE).read_text())
    return tuple(_exchange(item) for item in doc["interactions"])


def _exchange(item: dict[str, Any]) -> Exchange:
    request, response = item["request"], item["response"]
    return Exchange(
        id=item["id"],
        method=request["method"],
        url=request["url"],
        request_body=_json(request.get("body")),
        status=response["code"],
        headers={name: values[0] for name, values in (response.get("headers") or {}).items()},
        body=_json(response.get("body")),
    )


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def recorded(name: str) -> Any:
    """A body from recorded_bodies.json: marketplace_local_images_gpu, create_server_request_L40S,
    create_server_response_L40S, block_volume_boot_attached, poweron_response, server_404,
    block_volume_after_terminate."""
    bodies = _bodies()
    if name not in bodies:
        raise KeyError(f"no recorded body {name!r}; have {', '.join(bodies)}")
    return copy.deepcopy(bodies[name])


def exchanges(method: str | None = None, path: str | None = None, status: int | None = None) -> list[Exchange]:
    """Cassette exchanges, in order, filtered by method, a substring of the URL, and status."""
    return [
        copy.deepcopy(e)
        for e in _exchanges()
        if (method is None or e.method == method)
        and (path is None or path in e.url)
        and (status is None or e.status == status)
    ]


def server_body(state: str, detail: str | None = None) -> dict[str, Any]:
    """The recorded L40S server body in `state` (stopped, starting, running, stopping)."""
    for e in exchanges("GET", f"/servers/{SERVER_ID}", 200):
        if not e.url.endswith(SERVER_ID):
            continue  # user_data
        server: dict[str, Any] = e.body["server"]
        if server["state"] == state and (detail is None or server["state_detail"] == detail):
            return server
    raise KeyError(f"no recorded server body in state {state!r} {detail or ''}")


def products_servers() -> dict[str, Any]:
    """The fr-par-2 server type catalog, merged from its three recorded pages."""
    merged: dict[str, Any] = {}
    for e in exchanges("GET", "/products/servers?page="):
        merged.update(e.body["servers"])
    return merged


def products_page(page: int) -> Exchange:
    [found] = [e for e in exchanges("GET", "/products/servers?page=") if e.url.endswith(f"page={page}")]
    return found
