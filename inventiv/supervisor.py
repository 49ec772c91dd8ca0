"""`inventiv up`: services, migrations, seed, then the gateway and the scheduler as child processes.

Ctrl-C (SIGINT) or SIGTERM stops the children (the gateway drains its streams first), then the
embedded services. If a child dies on its own, the others are stopped too and `up` exits with its
status: a half-running system is worse than a stopped one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from inventiv.ports import check_port_free
from inventiv.services import ensure_services, open_pool
from inventiv.settings import Settings, settings_to_env

log = logging.getLogger(__name__)

# Poll children this often; shutdown latency is bounded by it, CPU cost is negligible.
_POLL_S = 0.2
# Extra time beyond the gateway's own drain timeout before children are killed.
_KILL_GRACE_S = 5.0


def run_up(settings: Settings) -> int:
    check_port_free(settings.gateway_host, settings.gateway_port)
    with ensure_services(settings) as resolved:
        import uvloop

        key, console_user = uvloop.run(_prepare(resolved))
        print(f"gateway: http://{resolved.gateway_host}:{resolved.gateway_port}  (data in {resolved.data_path})")
        print(f"console: http://{resolved.gateway_host}:{resolved.gateway_port}/console")
        if key is not None:
            print(f"admin key for organization 'demo' (shown once): {key}")
        if console_user is not None:
            print(f"console user for organization 'demo' (shown once): {console_user[0]} / {console_user[1]}")
        sys.stdout.flush()
        child = settings_to_env(resolved)
        # A value passed directly replaces its `_FILE` form, which the child would otherwise see as both.
        env = {k: v for k, v in os.environ.items() if not (k.endswith("_FILE") and k[: -len("_FILE")] in child)}
        env.update(child)
        children = [
            subprocess.Popen([sys.executable, "-m", "inventiv", "gateway"], env=env),
            subprocess.Popen([sys.executable, "-m", "inventiv", "scheduler"], env=env),
        ]
        status = _supervise(children, resolved.drain_timeout_s + _KILL_GRACE_S)
    if resolved.mock_cloud_path.exists():
        # The mock cloud stands for a real one: its servers outlive the control plane, and the next
        # `up` finds them serving. Stopping the system must not destroy the fleet it runs.
        print(
            "stopped. Mock cloud servers, if any, keep running as cloud servers would; "
            "terminate them with DELETE /instances/{id}."
        )
    return status


async def _prepare(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """Migrate and seed: the demo organization's first admin key and first console user, each shown once."""
    from gateway.console.users import seed_first_admin
    from sql.migrate import migrate
    from sql.seed import DEMO_ORG, seed_demo_catalog

    async with open_pool(settings) as pool:
        await migrate(pool)
        key = await seed_demo_catalog(pool)
        return key, await seed_first_admin(pool, DEMO_ORG)


def _supervise(children: list[subprocess.Popen[bytes]], kill_after_s: float) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = 0
        while not stopping:
            exited = [c for c in children if c.poll() is not None]
            if exited:
                status = exited[0].returncode or 1
                log.error("a child process exited; stopping the rest", extra={"pid": exited[0].pid})
                break
            time.sleep(_POLL_S)
        _stop(children, kill_after_s)
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(children: list[subprocess.Popen[bytes]], kill_after_s: float) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + kill_after_s
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
