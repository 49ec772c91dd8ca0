"""The inference engines a worker can run, and what the rest of the system must know about each.

Per engine: the container image (a pinned default, replaceable per engine in the settings), the command
line that serves a model on a port, how the engine is given its API key (the worker secret) without
putting it on a command line, and the Prometheus gauges whose sum is its queue depth. Readiness is the
same for all: `/health` answers 200 and `/v1/models` (with the key) lists the model.

Where each fact was read (the release named; line numbers drift, the functions do not):
- vLLM 0.33.0: `--api-key` or `VLLM_API_KEY` (vllm/envs.py) turn on a middleware that protects paths
  under /v1 (and /v2, /inference, /cohere) only: /health and /metrics stay open
  (vllm/entrypoints/serve/middleware/authenticate.py). Versions before 0.22.0 let a crafted Host header
  bypass the key (CVE-2026-48746): pin 0.22.0 or later. Queue gauges `vllm:num_requests_waiting` and
  `vllm:num_requests_running`, labelled by engine and summed here (vllm/v1/metrics/loggers.py). The
  image's entrypoint is the OpenAI server: arguments follow the image name; `--model` must be given.
- SGLang 0.5.23: `--api-key` only, no environment variable (sglang/srt/server_args fields/serving.py);
  /health, /ready and /metrics stay open (sglang/srt/utils/auth.py). `--host` defaults to 127.0.0.1 and
  `--port` to 30000, so both are given; `--tp-size`; `/metrics` only with `--enable-metrics`, gauges
  `sglang:num_queue_reqs` and `sglang:num_running_reqs` (sglang/srt/observability/metrics_collector.py).
  The image has no server entrypoint (its docs run `... lmsysorg/sglang bash`).
- llama.cpp (tools/server/server-http.cpp, README): `--api-key` or `LLAMA_API_KEY`; open without it are
  only /health, /v1/health, /models, /v1/models and the web UI: /metrics wants the key. `-hf
  <repo>[:quant]` downloads a GGUF; `--metrics` exposes `llamacpp:requests_processing` and
  `llamacpp:requests_deferred`; the default port is moving (8080 to 9931), so `--port` is always given;
  every path answers 503 while the model loads. The server-cuda image's entrypoint is /app/llama-server
  (.devops/cuda.Dockerfile).
- openai: any OpenAI-compatible server image, told what to serve through `INVENTIV_MODEL`,
  `INVENTIV_PORT` and `INVENTIV_API_KEY`; it exports no queue gauges we know of.
The image tags are pinned from the engines' latest releases on PyPI; check them against the registry
before a first deployment, and set `INVENTIV_<ENGINE>_IMAGE` to pin another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


class EngineName(enum.StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMA_CPP = "llama_cpp"
    OPENAI = "openai"


DEFAULT_ENGINE = EngineName.VLLM
# Where the engine listens inside its container; the host port maps to it.
CONTAINER_PORT = 8000
# What every engine container finds in its environment (the generic `openai` engine's whole contract);
# not settings of ours, but of the container.
CONTAINER_ENV_NAMES = ("INVENTIV_MODEL", "INVENTIV_PORT", "INVENTIV_API_KEY")
# SGLang reads its key only from `--api-key`: its container's shell adds it from the environment (the
# root-only env file), so the key is on no command line Docker or the boot script shows.
_SGLANG_WITH_KEY = 'exec python3 -m sglang.launch_server "$@" --api-key "$INVENTIV_API_KEY"'


@dataclass(frozen=True, slots=True)
class Engine:
    name: EngineName
    default_image: str
    # Gauges summed into the queue depth the gateway balances on; empty: the engine exports none.
    queue_gauges: tuple[str, ...]
    # Environment variable the engine reads its API key from (the boot script's env file sets it, and
    # INVENTIV_API_KEY for every engine); None: the command passes it from INVENTIV_API_KEY.
    key_env: str | None
    # Before the arguments (a command for images without a server entrypoint).
    command: tuple[str, ...] = ()

    def arguments(self, model: str, gpus: str) -> list[str]:
        """The command line after the image name, for `model` on `gpus` GPUs (either may be a shell
        variable the caller expands)."""
        port = str(CONTAINER_PORT)
        if self.name is EngineName.VLLM:
            return [*self.command, "--model", model, "--served-model-name", model, "--host", "0.0.0.0",
                    "--port", port, "--tensor-parallel-size", gpus]  # fmt: skip
        if self.name is EngineName.SGLANG:
            return [*self.command, "--model-path", model, "--served-model-name", model, "--host", "0.0.0.0",
                    "--port", port, "--tp-size", gpus, "--enable-metrics"]  # fmt: skip
        if self.name is EngineName.LLAMA_CPP:
            # Every layer on the GPU; the alias makes /v1/models list the id the gateway routes by.
            return [*self.command, "-hf", model, "--alias", model, "--host", "0.0.0.0", "--port", port,
                    "--metrics", "-ngl", "999"]  # fmt: skip
        return list(self.command)


ENGINES: dict[EngineName, Engine] = {
    EngineName.VLLM: Engine(
        EngineName.VLLM, "vllm/vllm-openai:v0.33.0",
        ("vllm:num_requests_waiting", "vllm:num_requests_running"), key_env="VLLM_API_KEY",
    ),
    EngineName.SGLANG: Engine(
        EngineName.SGLANG, "lmsysorg/sglang:v0.5.23",
        ("sglang:num_queue_reqs", "sglang:num_running_reqs"), key_env=None,
        command=("sh", "-c", _SGLANG_WITH_KEY, "sglang"),
    ),
    EngineName.LLAMA_CPP: Engine(
        EngineName.LLAMA_CPP, "ghcr.io/ggml-org/llama.cpp:server-cuda",
        ("llamacpp:requests_deferred", "llamacpp:requests_processing"), key_env="LLAMA_API_KEY",
    ),
    EngineName.OPENAI: Engine(EngineName.OPENAI, "", (), key_env="INVENTIV_API_KEY"),
}  # fmt: skip


def engine(name: str | None) -> Engine:
    """The engine called `name` (None: the default); ValueError names the known ones."""
    try:
        return ENGINES[EngineName(name or DEFAULT_ENGINE)]
    except ValueError:
        raise ValueError(f"unknown engine {name!r}; one of {', '.join(e.value for e in EngineName)}") from None


def queue_depth(metrics_text: str, gauges: tuple[str, ...]) -> int | None:
    """The sum of `gauges` in a Prometheus text exposition; None when the text has none of them."""
    total = 0.0
    seen = False
    for family in text_string_to_metric_families(metrics_text):
        if family.name in gauges:
            for sample in family.samples:
                if sample.name == family.name:
                    total += sample.value
                    seen = True
    return max(0, round(total)) if seen else None
