"""`inventiv up`: services, migrations, seed, then the gateway and the scheduler as child processes.

Ctrl-C (SIGINT) or SIGTERM stops the children (the gateway drains its streams first), then the
embedded services. If a child dies on its own, the others are stopped too and `up` exits with its
status: a half-running system is worse than a stopped one (inventiv/process_group.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from inventiv.ports import check_port_free
from inventiv.process_group import supervise
from inventiv.services import ensure_services, open_pool
from inventiv.settings import Settings, settings_to_env

log = logging.getLogger(__name__)

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
        outcome = supervise(children, resolved.drain_timeout_s + _KILL_GRACE_S)
        if not outcome.signalled:
            log.error("a child process exited; stopped the rest", extra={"exit_codes": outcome.exit_codes})
    if resolved.mock_cloud_path.exists():
        # The mock cloud stands for a real one: its servers outlive the control plane, and the next
        # `up` finds them serving. Stopping the system must not destroy the fleet it runs.
        print(
            "stopped. Mock cloud servers, if any, keep running as cloud servers would; "
            "terminate them with DELETE /instances/{id}."
        )
    return outcome.status


async def _prepare(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """Migrate and seed: the demo organization's first admin key and first console user, each shown once."""
    from gateway.console.users import seed_first_admin
    from sql.migrate import migrate
    from sql.seed import DEMO_ORG, seed_demo_catalog

    async with open_pool(settings) as pool:
        await migrate(pool)
        key = await seed_demo_catalog(pool)
        return key, await seed_first_admin(pool, DEMO_ORG)
