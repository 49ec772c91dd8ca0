# Two commands do everything: `make up` runs the whole system, `make test` checks it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck pytest test-deps llama-server system-tools bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/inventiv up

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The real counterparts some tests run against; without them those tests skip and say how to get them.
# `.ci/run` installs both and makes their absence a failure.
test-deps: llama-server system-tools

# llama.cpp's server (a real inference engine): built once from the llama-cpp-python sdist (~9 min on
# 2 cores; cmake and a C++ compiler needed), then cached in ~/.cache/inventiv.
llama-server: $(STAMP)
	$(BIN)/python -m tests.support.llama_server build

# cloud-init (its schema validates every worker user data) and the disk tools the boot script uses on
# the loop devices of its tests (Debian packages; the boot script tests also need root).
system-tools:
	@command -v cloud-init >/dev/null && command -v sfdisk >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    cloud-init fdisk e2fsprogs util-linux mount; }

# `make bench BENCH_ARGS=--quick` for a smoke run; see benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.gateway_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
