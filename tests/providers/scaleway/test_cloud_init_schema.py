"""Every worker #cloud-config the Scaleway provider generates passes the real `cloud-init schema`.

Without cloud-init installed these tests skip (`apt-get install cloud-init`); with
INVENTIV_REQUIRE_SYSTEM_TOOLS=1 (CI) they fail instead. Each test calls require() itself: pytest.fail
in a fixture would report an error, not a failure.
"""

from __future__ import annotations

import cloud_init_schema
import pytest
import yaml

from providers.scaleway.cloud_init import AgentBoot, WorkerBoot, worker_cloud_config
from worker.engines import ENGINES, EngineName

SBS = "/dev/disk/by-id/scsi-0SCW_sbs_volume-*"
IMAGE = "vllm/vllm-openai:v0.33.0"
SECRET = "worker-secret-0123456789-abcdefghij"
AGENT = AgentBoot("https://gateway.example.com", "registry.example.com/inventiv:1",
                  "11111111-2222-3333-4444-555555555555")  # fmt: skip


def user_data(
    model: str, data_device_hint: str | None, *, image: str = IMAGE, port: int = 8000,
    engine: EngineName = EngineName.VLLM, agent: AgentBoot | None = AGENT,
) -> str:  # fmt: skip
    """The one place that knows worker_cloud_config's parameters: update it when they change."""
    return worker_cloud_config(WorkerBoot(
        model, ENGINES[engine], image, port, SECRET, data_device_hint, hf_token="hf_" + "a" * 30, agent=agent,
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("model", "hint", "image", "port"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", SBS, IMAGE, 8000),
        ("Qwen/Qwen2.5-7B-Instruct", None, IMAGE, 8000),
        ("gpt2", "/dev/sdb", "registry.example.com:5000/team/vllm@sha256:" + "a" * 64, 9001),
        ("meta-llama/Llama-3.1-8B-Instruct", "/dev/disk/by-id/nvme-*_vol?", "vllm/vllm-openai:latest", 1),
        ("mistralai/Mistral-7B-Instruct-v0.3", "/dev/vdb", IMAGE, 65535),
    ],
)
def test_generated_documents_pass_the_schema(model: str, hint: str | None, image: str, port: int) -> None:
    cloud_init_schema.require()
    cloud_init_schema.validate(user_data(model, hint, image=image, port=port))


@pytest.mark.parametrize("engine", list(EngineName))
@pytest.mark.parametrize("agent", [AGENT, None], ids=["agent", "no-agent"])
def test_every_engine_with_and_without_an_agent_passes_the_schema(engine: EngineName, agent: AgentBoot | None) -> None:
    cloud_init_schema.require()
    cloud_init_schema.validate(user_data("Qwen/Qwen2.5-7B-Instruct", SBS, engine=engine, agent=agent))


def _broken(**changes: object) -> str:
    """A generated document with some keys changed: the check must fail on our own document's shape."""
    parsed = yaml.safe_load(user_data("Qwen/Qwen2.5-7B-Instruct", SBS))
    parsed.update(changes)
    return "#cloud-config\n" + yaml.safe_dump(parsed, sort_keys=False)


def _script_permissions_as_integer() -> str:
    parsed = yaml.safe_load(user_data("Qwen/Qwen2.5-7B-Instruct", SBS))
    parsed["write_files"][0]["permissions"] = 0o755  # YAML `0755` unquoted: an int, not the string cloud-init wants
    return "#cloud-config\n" + yaml.safe_dump(parsed, sort_keys=False)


@pytest.mark.parametrize(
    ("document", "flagged"),
    [
        pytest.param(_broken(runcmd="/usr/local/sbin/inventiv-worker-boot"), "is not of type 'array'", id="runcmd-str"),
        pytest.param(_script_permissions_as_integer(), "is not of type 'string'", id="permissions-int"),
        # A deprecated key: cloud-init exits 0 and only prints it; validate() must still refuse it.
        pytest.param(_broken(apt_update=True), "DEPRECATED", id="deprecated-key"),
        pytest.param(_broken().removeprefix("#cloud-config\n"), "#cloud-config", id="no-header"),
        pytest.param("#cloud-config\nruncmd: [ls\n", "not valid yaml", id="bad-yaml"),
    ],
)
def test_a_broken_document_fails(document: str, flagged: str) -> None:
    cloud_init_schema.require()
    with pytest.raises(AssertionError, match="cloud-init schema rejected") as raised:
        cloud_init_schema.validate(document)
    assert flagged in str(raised.value)


def test_the_dumped_round_trip_of_a_generated_document_still_passes() -> None:
    # Guards the broken cases above: they fail for the change they make, not for the re-dump.
    cloud_init_schema.require()
    cloud_init_schema.validate(_broken())
