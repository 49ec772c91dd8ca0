from pathlib import Path

import pytest

from inventiv.settings import Settings, SettingsError, load_environment, settings_to_env


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({}, "gateway_port", 8003),
        ({"INVENTIV_GATEWAY_PORT": "9000"}, "gateway_port", 9000),
        ({"INVENTIV_ORPHAN_DRY_RUN": "yes"}, "orphan_dry_run", True),
        ({"INVENTIV_ORPHAN_DRY_RUN": "0"}, "orphan_dry_run", False),
        ({"WORKER_DATA_VOLUME_GB": "500"}, "worker_data_volume_gb", 500),
        ({"INVENTIV_DATABASE_URL": ""}, "database_url", None),
        ({"INVENTIV_AFFINITY_TTL_S": "60"}, "affinity_ttl_s", 60),
    ],
)
def test_values_come_from_the_environment(env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(Settings.from_env(env), field) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INVENTIV_GATEWAY_PORT": "http"}, "INVENTIV_GATEWAY_PORT must be a int"),
        ({"INVENTIV_GATEWAY_PORT": "70000"}, "1-65535"),
        ({"INVENTIV_ORPHAN_DRY_RUN": "maybe"}, "INVENTIV_ORPHAN_DRY_RUN must be a bool"),
        ({"INVENTIV_DATABASE_URL": "mysql://x"}, "INVENTIV_DATABASE_URL must start with"),
        ({"INVENTIV_REDIS_URL": "x", "INVENTIV_REDIS_URL_FILE": "/f"}, "not both"),
        ({"INVENTIV_DATABASE_URL_FILE": "/nonexistent/secret"}, "cannot read"),
        ({"INVENTIV_LOG_FORMAT": "xml"}, "INVENTIV_LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_file_variant_reads_the_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "db"
    secret.write_text("postgresql://u:p@db/inventiv\n")
    settings = Settings.from_env({"INVENTIV_DATABASE_URL_FILE": str(secret)})
    assert settings.database_url == "postgresql://u:p@db/inventiv"


def test_explicit_env_file_wins_and_local_env_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("INVENTIV_GATEWAY_PORT=1111\nINVENTIV_DEPLOYMENT_TAG=dev\n")
    chosen = tmp_path / "prod.env"
    chosen.write_text("INVENTIV_GATEWAY_PORT=2222\n")
    monkeypatch.delenv("INVENTIV_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("INVENTIV_DEPLOYMENT_TAG", raising=False)
    env = load_environment(str(chosen), cwd=tmp_path)
    assert env["INVENTIV_GATEWAY_PORT"] == "2222"
    assert "INVENTIV_DEPLOYMENT_TAG" not in env


def test_local_env_fills_in_but_never_overrides_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("INVENTIV_GATEWAY_PORT=1111\nINVENTIV_DEPLOYMENT_TAG=dev\n")
    monkeypatch.setenv("INVENTIV_GATEWAY_PORT", "3333")
    monkeypatch.delenv("INVENTIV_DEPLOYMENT_TAG", raising=False)
    env = load_environment(None, cwd=tmp_path)
    assert env["INVENTIV_GATEWAY_PORT"] == "3333"
    assert env["INVENTIV_DEPLOYMENT_TAG"] == "dev"


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_environment(str(tmp_path / "absent.env"))


def test_settings_survive_a_round_trip_through_the_environment() -> None:
    settings = Settings(database_url="postgresql://x/y", orphan_dry_run=True, worker_data_volume_gb=0)
    assert Settings.from_env(settings_to_env(settings)) == settings


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.0.0.0/0", "0.0.0.0/0 opens the worker to the whole internet"),
        ("10.0.0.0/8, ::/0", "::/0 opens the worker to the whole internet"),
        ("10.0.0.1/8", "host bits set; did you mean 10.0.0.0/8"),
        ("office", "'office' is not an IPv4 or IPv6 network"),
    ],
)
@pytest.mark.parametrize("name", ["INVENTIV_SCW_WORKER_ALLOWED_CIDRS", "INVENTIV_SCW_SSH_ALLOWED_CIDRS"])
def test_scaleway_allowed_networks_refused_when_malformed_or_world_open(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}: .*{message}"):
        Settings.from_env({name: value})


def test_scaleway_allowed_networks_are_normalised() -> None:
    settings = Settings.from_env({"INVENTIV_SCW_WORKER_ALLOWED_CIDRS": "203.0.113.7, 2001:db8::/48,,203.0.113.7/32"})
    assert settings.scw_worker_cidrs == ("203.0.113.7/32", "2001:db8::/48") and settings.scw_ssh_cidrs == ()


def test_scaleway_private_network_is_an_id() -> None:
    with pytest.raises(SettingsError, match="INVENTIV_SCW_PRIVATE_NETWORK_ID must be a Private Network id"):
        Settings.from_env({"INVENTIV_SCW_PRIVATE_NETWORK_ID": "my-vpc"})
