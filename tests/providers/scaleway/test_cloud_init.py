"""The worker's #cloud-config: its YAML, its quoting, its root-only secrets, refused values, and the
engine containers the boot script starts.

The boot script runs under bash with the tools it calls on its way to the containers (findmnt, lsblk,
mountpoint, udevadm, docker, nvidia-smi) replaced by one stub that records each call; no data volume is
offered here. Its disk logic runs on real block devices in test_boot_script_disks.py, and every document
is checked by the real `cloud-init schema` in test_cloud_init_schema.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers.scaleway.cloud_init import (
    AGENT_ENV,
    DATA_DIR,
    SCRIPT_PATH,
    WORKER_ENV,
    AgentBoot,
    CloudInitError,
    WorkerBoot,
    worker_cloud_config,
)
from worker.engines import ENGINES, EngineName

MODEL = "Qwen/Qwen2.5-7B-Instruct"
IMAGE = "vllm/vllm-openai:v0.33.0"
SBS = "/dev/disk/by-id/scsi-0SCW_sbs_volume-*"
SECRET = "s3cr3t-worker-key-that-must-stay-root-only"
HF_TOKEN = "hf_abcdefghijklmnopqrstuvwxyz012345"
INSTANCE = "11111111-2222-3333-4444-555555555555"
AGENT = AgentBoot("https://gateway.example.com", "registry.example.com/inventiv:1", INSTANCE)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the boot script is bash")


def boot(**changes: Any) -> WorkerBoot:
    values: dict[str, Any] = {"model": MODEL, "engine": ENGINES[EngineName.VLLM], "image": IMAGE, "port": 8000,
                              "secret": SECRET, "data_device_hint": SBS, **changes}  # fmt: skip
    return WorkerBoot(**values)


def files(document: str) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in yaml.safe_load(document)["write_files"]}


def boot_script(document: str) -> str:
    parsed = yaml.safe_load(document)
    entry = files(document)[SCRIPT_PATH]
    assert entry["permissions"] == "0755"
    assert parsed["runcmd"] == [[SCRIPT_PATH]]
    script: str = entry["content"]
    return script


def env_file(document: str, path: str) -> dict[str, str]:
    entry = files(document)[path]
    assert (entry["permissions"], entry["owner"]) == ("0600", "root:root"), "secrets are root's only"
    return dict(line.split("=", 1) for line in entry["content"].splitlines())


def shell_values(script: str) -> dict[str, str]:
    """What bash assigns to the script's variables (its header only, nothing is run)."""
    header = script.split("\nengine_args() ", 1)[0]
    names = ("MODEL", "IMAGE", "HOST_PORT", "DATA_DEVICES", "AGENT_IMAGE")
    printed = "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    out = subprocess.run(["bash", "-c", f"{header}\n{printed}"], capture_output=True, check=True, timeout=10).stdout
    return dict(zip(names, out.decode().split("\0")[:-1], strict=True))


@pytest.mark.parametrize(
    ("model", "port", "image", "hint"),
    [
        (MODEL, 8000, IMAGE, SBS),
        (MODEL, 8000, IMAGE, None),
        ("gpt2", 9001, "registry.example.com:5000/team/vllm@sha256:" + "a" * 64, "/dev/sdb"),
        ("meta-llama/Llama-3.1-8B-Instruct", 1, "vllm/vllm-openai:latest", "/dev/disk/by-id/nvme-*_vol?"),
    ],
)
def test_the_document_parses_and_bash_reads_back_every_value(
    model: str, port: int, image: str, hint: str | None
) -> None:
    document = worker_cloud_config(boot(model=model, port=port, image=image, data_device_hint=hint, agent=AGENT))

    assert document.startswith("#cloud-config\n")
    script = boot_script(document)
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    subprocess.run(["bash", "-n"], input=script.encode(), check=True, timeout=10)
    assert shell_values(script) == {
        "MODEL": model, "IMAGE": image, "HOST_PORT": str(port), "DATA_DEVICES": hint or "", "AGENT_IMAGE": AGENT.image,
    }  # fmt: skip


def test_a_glob_hint_is_quoted_so_it_is_expanded_only_where_the_script_means_to() -> None:
    script = boot_script(worker_cloud_config(boot()))
    assert f"DATA_DEVICES='{SBS}'\n" in script


@pytest.mark.parametrize(
    ("name", "key_vars"),
    [(EngineName.VLLM, {"VLLM_API_KEY"}), (EngineName.SGLANG, set()), (EngineName.LLAMA_CPP, {"LLAMA_API_KEY"}),
     (EngineName.OPENAI, set())],
)
def test_the_secret_and_the_hf_token_are_in_root_only_files_and_nowhere_else(
    name: EngineName, key_vars: set[str]
) -> None:
    document = worker_cloud_config(boot(engine=ENGINES[name], hf_token=HF_TOKEN, agent=AGENT))

    worker = env_file(document, WORKER_ENV)
    assert {k for k, v in worker.items() if v == SECRET} == {"INVENTIV_API_KEY", *key_vars}
    assert worker["HF_TOKEN"] == HF_TOKEN and worker["INVENTIV_MODEL"] == MODEL
    agent = env_file(document, AGENT_ENV)
    assert agent["INVENTIV_AGENT_SECRET"] == SECRET and agent["INVENTIV_AGENT_INSTANCE_ID"] == INSTANCE
    assert agent["INVENTIV_AGENT_ENGINE"] == name.value
    script = boot_script(document)
    assert SECRET not in script and HF_TOKEN not in script, "never on a command line or in the script"


def test_without_an_agent_there_is_no_agent_file_and_no_agent_container() -> None:
    document = worker_cloud_config(boot())
    assert AGENT_ENV not in files(document)
    assert shell_values(boot_script(document))["AGENT_IMAGE"] == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "Qwen/Qwen2.5; reboot"}, "model id"),
        ({"model": "Qwen/$(reboot)"}, "model id"),
        ({"model": "Qwen/Qwen 2.5"}, "model id"),
        ({"model": "Qwen/Qwen'2.5"}, "model id"),
        ({"model": "Qwen/Qwen2.5\nruncmd: [reboot]"}, "model id"),
        ({"model": "Qwén/Qwen2.5"}, "model id"),
        ({"model": ""}, "model id"),
        ({"model": "../../etc/passwd"}, "not a Hugging Face repo id"),
        ({"model": "/models/qwen"}, "not a Hugging Face repo id"),
        ({"model": "org/name/extra"}, "not a Hugging Face repo id"),
        ({"model": "org//name"}, "not a Hugging Face repo id"),
        ({"model": "-rf/x"}, "not a Hugging Face repo id"),
        ({"model": "org/name-GGUF:Q4_K_M"}, "for the llama_cpp engine only"),
        ({"image": "vllm/vllm-openai:latest --privileged"}, "worker image"),
        ({"image": "vllm/vllm-openai:$(id)"}, "worker image"),
        ({"image": ""}, "no container image for the vllm engine"),
        ({"port": 0}, "1-65535"),
        ({"port": 65536}, "1-65535"),
        ({"data_device_hint": "dev/sdb"}, "data device hint"),
        ({"data_device_hint": "/dev/sd[bc]"}, "data device hint"),
        ({"data_device_hint": "/dev/sdb /dev/sdc"}, "data device hint"),
        ({"secret": "short"}, "worker secret"),
        ({"secret": "a" * 20 + "\nHF_TOKEN=x"}, "worker secret"),
        ({"hf_token": "hf_token with spaces in it"}, "INVENTIV_HF_TOKEN"),
        ({"agent": replace(AGENT, gateway_url="ftp://gateway")}, "agent gateway URL"),
        ({"agent": replace(AGENT, instance_id="not-a-uuid")}, "instance id"),
    ],
)
def test_bad_values_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CloudInitError, match=message) as caught:
        worker_cloud_config(boot(**changes))
    assert SECRET not in str(caught.value), "an error never echoes the secret"


def test_a_llama_cpp_model_may_name_its_quantisation() -> None:
    document = worker_cloud_config(boot(engine=ENGINES[EngineName.LLAMA_CPP], model="org/name-GGUF:Q4_K_M"))
    assert shell_values(boot_script(document))["MODEL"] == "org/name-GGUF:Q4_K_M"


# -- the boot script, up to the containers it starts ------------------------------------------------

STUB = """\
import json, os, sys
name, args = sys.argv[1], sys.argv[2:]
machine = json.load(open(os.environ["MACHINE"]))
with open(os.environ["CALLS"], "a") as calls:
    calls.write(json.dumps([name, *args]) + "\\n")
if name == "findmnt":
    print("/dev/sda1")
elif name == "lsblk" and args[:2] == ["-no", "PKNAME"]:
    print("sda")
elif name == "mountpoint":
    sys.exit(1)
elif name == "docker" and args[:2] == ["container", "inspect"]:
    sys.exit(0 if args[2] in machine.get("containers", []) else 1)
elif name == "nvidia-smi":
    for i in range(machine.get("gpus", 1)):
        print(f"GPU {i}: NVIDIA L40S (UUID: GPU-{i})")
"""
TOOLS = ("findmnt", "lsblk", "mountpoint", "udevadm", "docker", "nvidia-smi")


def run_boot(tmp_path: Path, document: str, **machine: Any) -> tuple[list[list[str]], Path]:
    """Run the boot script with no data volume to find: (the tool calls it made, its data dir)."""
    bin_dir, data = tmp_path / "bin", tmp_path / "data"
    bin_dir.mkdir()
    stub = bin_dir / "stub.py"
    stub.write_text(STUB)
    for tool in TOOLS:
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{stub}" {tool} "$@"\n')
        wrapper.chmod(0o755)
    (tmp_path / "machine.json").write_text(json.dumps(machine))
    script = boot_script(document).replace(f"DATA_DIR={DATA_DIR}", f"DATA_DIR={data}")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MACHINE": str(tmp_path / "machine.json"),
           "CALLS": str(tmp_path / "calls")}  # fmt: skip
    subprocess.run(["bash"], input=script.encode(), env=env, check=True, timeout=30, capture_output=True)
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    assert (data / "huggingface").is_dir(), "the model cache folder exists either way"
    return calls, data


def docker_runs(calls: list[list[str]]) -> dict[str, list[str]]:
    """The `docker run` calls by container name."""
    runs = [c[2:] for c in calls if c[:2] == ["docker", "run"]]
    return {args[args.index("--name") + 1]: args for args in runs}


@pytest.mark.parametrize(
    ("name", "command"),
    [
        (EngineName.VLLM, ["--model", MODEL, "--served-model-name", MODEL, "--host", "0.0.0.0", "--port", "8000",
                           "--tensor-parallel-size", "2"]),
        (EngineName.SGLANG, ["sh", "-c", 'exec python3 -m sglang.launch_server "$@" --api-key "$INVENTIV_API_KEY"',
                             "sglang", "--model-path", MODEL, "--served-model-name", MODEL, "--host", "0.0.0.0",
                             "--port", "8000", "--tp-size", "2", "--enable-metrics"]),
        (EngineName.LLAMA_CPP, ["-hf", MODEL, "--alias", MODEL, "--host", "0.0.0.0", "--port", "8000", "--metrics",
                                "-ngl", "999"]),
        (EngineName.OPENAI, []),
    ],
)  # fmt: skip
def test_each_engine_serves_the_model_on_the_port_with_every_gpu(
    tmp_path: Path, name: EngineName, command: list[str]
) -> None:
    document = worker_cloud_config(boot(engine=ENGINES[name], port=8001))

    calls, data = run_boot(tmp_path, document, gpus=2)

    args = docker_runs(calls)["inventiv-worker"]
    assert args[args.index(IMAGE) + 1 :] == command
    options = " ".join(args[: args.index(IMAGE)])
    for option in ("--gpus all", "--restart unless-stopped", "-p 8001:8000", f"-v {data}:{data}",
                   f"--env-file {WORKER_ENV}", f"-e HF_HOME={data}/huggingface"):  # fmt: skip
        assert option in options
    assert SECRET not in json.dumps(calls), "the secret reaches the engine through the env file only"


def test_the_agent_runs_beside_the_engine_on_the_host_network(tmp_path: Path) -> None:
    calls, data = run_boot(tmp_path, worker_cloud_config(boot(agent=AGENT)))

    agent = docker_runs(calls)["inventiv-agent"]
    assert agent[-2:] == [AGENT.image, "agent"]
    options = " ".join(agent)
    for option in ("--network host", "--restart unless-stopped", f"--env-file {AGENT_ENV}", f"-v {data}:{data}:ro"):
        assert option in options


def test_containers_that_exist_are_left_to_docker(tmp_path: Path) -> None:
    calls, _ = run_boot(tmp_path, worker_cloud_config(boot(agent=AGENT)), containers=["inventiv-worker",
                                                                                      "inventiv-agent"])
    assert docker_runs(calls) == {}
