"""The control-plane VM's settings: read from the env file only, every bad one refused with its name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from deploy_env import settings_for, write_env

from inventiv.deploy.errors import DeployError
from inventiv.deploy.vm_settings import load


def test_env_file_settings(tmp_path: Path) -> None:
    secret = tmp_path / "deploy" / "env" / "secrets" / "inventiv.env"
    secret.parent.mkdir(parents=True)
    secret.write_text("POSTGRES_PASSWORD=x\n")
    settings = settings_for(tmp_path, SECRET_FILES="secrets/inventiv.env", SECRETS_DIR="/srv/secrets")
    assert settings.secret_paths == [secret]
    assert settings.secrets_dir == "/srv/secrets"
    assert settings.root_bytes == 40 * 10**9
    assert settings.tags == ("inventiv-control-plane", "env=prod")
    assert settings.health_base_url == "https://prod.inventiv.example.com"


def test_a_local_dotenv_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The old system's prod secrets went to a developer's folder: a .env in the working folder won.
    env_file = write_env(tmp_path, SECRETS_DIR="/etc/inventiv/secrets")
    (tmp_path / ".env").write_text("SECRETS_DIR=/home/dev/secrets\nSCW_ROOT_VOLUME_SIZE_GB=10\nDEPLOY_ENV=staging\n")
    monkeypatch.chdir(tmp_path)
    settings = load("prod", str(env_file))
    assert (settings.secrets_dir, settings.root_volume_size_gb) == ("/etc/inventiv/secrets", 40)
    # Unset in the env file, the default applies, still not the .env's value.
    assert load("prod", str(write_env(tmp_path, SECRETS_DIR=None))).secrets_dir == "/etc/inventiv/secrets"


def test_the_env_file_wins_over_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_DIR", "/tmp/elsewhere")
    assert settings_for(tmp_path, SECRETS_DIR="/etc/inventiv/secrets").secrets_dir == "/etc/inventiv/secrets"


def test_default_env_file_is_deploy_env_of_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(tmp_path, "staging", SCW_ROOT_VOLUME_SIZE_GB=40)
    monkeypatch.chdir(tmp_path)
    assert load("staging", None).env == "staging"
    with pytest.raises(DeployError, match=r"no env file deploy/env/prod.env: copy deploy/env/prod.env.example"):
        load("prod", None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"SCW_ROOT_VOLUME_SIZE_GB": 8}, r"SCW_ROOT_VOLUME_SIZE_GB=8 is below the image's 10 GB root"),
        ({"SCW_ROOT_VOLUME_SIZE_GB": "forty"}, r"SCW_ROOT_VOLUME_SIZE_GB must be a int, not 'forty'"),
        ({"SECRET_FILES": "secrets/missing"}, r"SECRET_FILES: .*secrets/missing does not exist"),
        ({"DEPLOY_ENV": "staging"}, r"DEPLOY_ENV is 'staging', not 'prod': wrong env file"),
        ({"SSH_ALLOWED_CIDRS": "0.0.0.0/0"}, r"SSH_ALLOWED_CIDRS: 0.0.0.0/0 opens the worker to the whole internet"),
        ({"SSH_ALLOWED_CIDRS": None}, r"missing SSH_ALLOWED_CIDRS"),
        ({"SECRETS_DIR": "relative/dir"}, r"SECRETS_DIR must be an absolute path"),
        ({"SECRETS_DIR": "/etc/$(reboot)"}, r"SECRETS_DIR must be an absolute path"),
        ({"SCW_ROOT_VOLUME_TYPE": "b_ssd"}, r"SCW_ROOT_VOLUME_TYPE must be one of sbs_volume, l_ssd"),
        ({"DOMAIN": "https://x.example.com"}, r"DOMAIN must be a DNS name"),
        ({"SSH_KEY_FILE": "no-such-key"}, r"SSH_KEY_FILE: .*no-such-key does not exist"),
    ],
)
def test_bad_settings_name_what_is_wrong(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=message):
        settings_for(tmp_path, **values)


def test_secret_files_must_hold_the_compose_env(tmp_path: Path) -> None:
    folder = tmp_path / "deploy" / "env"
    folder.mkdir(parents=True)
    (folder / "scw_secret_key").write_text("k")
    with pytest.raises(DeployError, match=r"SECRET_FILES holds no inventiv.env \(COMPOSE_ENV_SECRET\)"):
        settings_for(tmp_path, SECRET_FILES="scw_secret_key")


def test_unknown_env(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"unknown env 'production': one of staging, prod"):
        load("production", str(write_env(tmp_path)))


def test_examples_are_complete_and_valid(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[3] / "deploy" / "env"
    sizes = {}
    for env in ("staging", "prod"):
        text = (examples / f"{env}.env.example").read_text()
        text = text.replace("SCW_SECRET_KEY=\n", "SCW_SECRET_KEY=k\n").replace(
            "SCW_DEFAULT_PROJECT_ID=\n", "SCW_DEFAULT_PROJECT_ID=p\n")
        # Their secret files and SSH key are the operator's to make: drop them to check the rest.
        lines = [line for line in text.splitlines() if not line.startswith(("SECRET_FILES=", "SSH_KEY_FILE="))]
        path = tmp_path / f"{env}.env"
        path.write_text("\n".join(lines) + "\n")
        env_before = dict(os.environ)
        sizes[env] = load(env, str(path)).root_volume_size_gb
        assert dict(os.environ) == env_before
    assert sizes == {"staging": 40, "prod": 100}


@pytest.mark.parametrize(
    ("command", "values", "message"),
    [
        ("secrets", {}, r"SSH_KEY_FILE is not set; `secrets` logs in to the VM with it"),
        ("up", {}, r"SSH_KEY_FILE is not set; `up` logs in"),
        ("rebuild", {"SSH_KEY_FILE": "key"}, r"SECRET_FILES lists no file; `rebuild` would push nothing"),
        ("provision", {}, None),
        ("destroy", {}, None),
        ("up", {"SSH_KEY_FILE": "key"}, None),
    ],
)
def test_what_each_command_needs(tmp_path: Path, command: str, values: dict[str, Any], message: str | None) -> None:
    (tmp_path / "deploy" / "env").mkdir(parents=True)
    (tmp_path / "deploy" / "env" / "key").write_text("not checked here")
    settings = settings_for(tmp_path, **values)
    if message is None:
        settings.require_for(command)
    else:
        with pytest.raises(DeployError, match=message):
            settings.require_for(command)
