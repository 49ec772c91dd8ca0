from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks import peer, static_upstream
from benchmarks.peer import NGINX_PROXY, SGLANG_ROUTER, VLLM_ROUTER, PeerUnavailable


def test_sglang_router_runs_as_the_peer_harness_runs_it() -> None:
    argv = SGLANG_ROUTER.launch_argv(Path("/venv/bin/sglang-router"), 8000, "http://127.0.0.1:9000", 9100)
    assert argv == [
        "/venv/bin/sglang-router", "launch", "--host", "127.0.0.1", "--port", "8000",
        "--worker-urls", "http://127.0.0.1:9000", "--policy", "round_robin",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", "9100", "--log-level", "warn",
    ]  # fmt: skip


def test_vllm_router_runs_round_robin_at_its_default_log_level() -> None:
    argv = VLLM_ROUTER.launch_argv(Path("/venv/bin/vllm-router"), 8000, "http://127.0.0.1:9000", 9100)
    assert argv == [
        "/venv/bin/vllm-router", "--host", "127.0.0.1", "--port", "8000",
        "--worker-urls", "http://127.0.0.1:9000", "--policy", "round_robin",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", "9100",
    ]  # fmt: skip


def test_each_router_has_a_venv_of_its_own_in_the_temp_folder() -> None:
    routers = [p for p in peer.PEERS.values() if not p.system]
    venvs = {p.venv for p in routers}
    assert len(venvs) == len(routers) == 2
    assert all(v.parent == Path(tempfile.gettempdir()) for v in venvs)
    assert VLLM_ROUTER.executable() == VLLM_ROUTER.venv / "bin" / "vllm-router"
    assert peer.install_steps(VLLM_ROUTER, "python3")[1][-1] == "vllm-router"


@pytest.mark.parametrize(
    ("names", "expected"),
    [("sglang-router,vllm-router", ["sglang-router", "vllm-router"]), ("vllm-router", ["vllm-router"]),
     (" vllm-router , sglang-router ", ["sglang-router", "vllm-router"]), ("", []),
     ("nginx,sglang-router", ["sglang-router", "nginx"]),
     (",".join(peer.PEERS), ["sglang-router", "vllm-router", "nginx"])],
)  # fmt: skip
def test_peers_chosen_by_name(names: str, expected: list[str]) -> None:
    assert [p.name for p in peer.chosen(names)] == expected


def test_an_unknown_peer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown peer\(s\) litellm"):
        peer.chosen("vllm-router,litellm")


def test_an_installed_peer_is_not_installed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    binary = VLLM_ROUTER.executable()
    binary.parent.mkdir(parents=True)
    binary.touch()
    monkeypatch.setattr(peer, "install_steps", lambda *_: pytest.fail("installed again"))
    assert peer.ensure_installed(VLLM_ROUTER) == binary


def test_a_failed_install_step_says_which_and_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    failing = [sys.executable, "-c", "import sys; print('no matching distribution', file=sys.stderr); sys.exit(3)"]
    monkeypatch.setattr(peer, "install_steps", lambda *_: [failing])
    with pytest.raises(PeerUnavailable, match="exited with 3: no matching distribution"):
        peer.ensure_installed(VLLM_ROUTER)


def test_nginx_is_the_system_s_never_pip_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static_upstream, "find_nginx", lambda: Path("/usr/sbin/nginx"))
    monkeypatch.setattr(peer, "install_steps", lambda *_: pytest.fail("pip-installed"))
    assert peer.ensure_installed(NGINX_PROXY) == Path("/usr/sbin/nginx")


def test_a_missing_nginx_is_skipped_with_the_static_upstream_s_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static_upstream, "find_nginx", lambda: None)
    monkeypatch.setattr(peer, "install_steps", lambda *_: pytest.fail("pip-installed"))
    with pytest.raises(PeerUnavailable) as raised:
        peer.ensure_installed(NGINX_PROXY)
    assert str(raised.value) == static_upstream.NGINX_MISSING


def test_the_peers_to_run_leave_out_one_that_cannot_be_had_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    installed = VLLM_ROUTER.executable()
    installed.parent.mkdir(parents=True)
    installed.touch()
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    monkeypatch.setattr(peer, "install_steps", lambda *_: [failing])
    monkeypatch.setattr(static_upstream, "find_nginx", lambda: None)
    assert peer.available("vllm-router,sglang-router,nginx") == {VLLM_ROUTER: installed}
    err = capsys.readouterr().err
    assert "sglang-router: skipped, it could not be installed: " in err
    assert f"nginx: skipped, {static_upstream.NGINX_MISSING}" in err


def test_an_unknown_peer_to_run_stops_the_benchmark_with_the_known_ones() -> None:
    known = r"known: sglang-router, vllm-router, nginx"
    with pytest.raises(SystemExit, match=rf"--peers: unknown peer\(s\) litellm; {known}"):
        peer.available("litellm")
