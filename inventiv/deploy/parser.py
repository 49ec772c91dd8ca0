"""The parser of `inventiv deploy ...` (what each command does: commands.py), light enough for every CLI call."""

from __future__ import annotations

from typing import Any

from inventiv.deploy.vm_settings import ENVIRONMENTS


def add_parser(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="the control-plane VM on Scaleway (settings: deploy/env/<env>.env)")
    actions = deploy.add_subparsers(dest="deploy_command", required=True, metavar="ACTION")
    env_help = f"{' or '.join(ENVIRONMENTS)}; reads deploy/env/<env>.env unless --env-file is given"
    for name, text in (
        ("provision", "create or adopt the VM, grow its root volume, open 80/443 and SSH from SSH_ALLOWED_CIDRS"),
        ("up", "docker compose pull + up on the VM, then wait for https://DOMAIN/healthz and /readyz"),
        ("destroy", "delete the VM, its volumes, IP and security group (asks for the env's name)"),
        ("rebuild", "destroy, provision, secrets sync and up"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--env", required=True, help=env_help)
        if name in ("destroy", "rebuild"):
            action.add_argument("--yes", action="store_true", help="do not ask to type the env's name")
    secrets = actions.add_parser("secrets", help="the secret files on the VM")
    secrets_actions = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    sync = secrets_actions.add_parser("sync", help="push SECRET_FILES to SECRETS_DIR over SSH and check them")
    sync.add_argument("--env", required=True, help=env_help)
