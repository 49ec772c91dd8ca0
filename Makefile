# Two commands do everything: `make up` runs the whole system, `make test` checks it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck pytest test-deps llama-server system-tools bench bench-deps bench-floor clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/inventiv up

# pytest here measures line and branch coverage (setup.cfg's [coverage:run]) and fails under 80 %;
# a plain `pytest tests/x.py` runs without it.
test: lint typecheck pytest

# lint-imports checks the layering (setup.cfg's [importlinter] contracts); imports inside functions count.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@test -x /usr/bin/chromium || echo "note: Chromium is not installed, so the console's browser tests skip;" \
	  "get it with: apt-get install chromium (or: make system-tools)"
	$(BIN)/pytest --cov --cov-branch --cov-report=term:skip-covered --cov-fail-under=80

# The real counterparts some tests run against; without them those tests skip and say how to get them.
# `.ci/run` installs both and makes their absence a failure.
test-deps: llama-server system-tools

# llama.cpp's server (a real inference engine): built once from the llama-cpp-python sdist (~9 min on
# 2 cores; cmake and a C++ compiler needed), then cached in ~/.cache/inventiv.
llama-server: $(STAMP)
	$(BIN)/python -m tests.support.llama_server build

# cloud-init (its schema validates every worker user data), the disk tools the boot script uses on
# the loop devices of its tests (Debian packages; the boot script tests also need root), and Chromium
# (the console's browser tests drive it through Playwright; Playwright's own browser downloads are not used).
system-tools:
	@command -v cloud-init >/dev/null && command -v sfdisk >/dev/null && test -x /usr/bin/chromium || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    cloud-init fdisk e2fsprogs util-linux mount chromium; }

# `make bench BENCH_ARGS=--quick` for a smoke run; see benchmarks/RESULTS.md. The peer routers install
# themselves into venvs of their own on first use.
bench: $(STAMP) bench-deps
	$(BIN)/python -m benchmarks.gateway_bench $(BENCH_ARGS)

# The cost curve under the gateway, at full load and at 200 req/s: a raw uvloop protocol, aiohttp alone,
# a bare proxy on the gateway's upstream pool, the gateway (plain and compiled), then the peers of `make bench` in front of the
# same worker (benchmarks/proxy_floor.py; ~11 minutes).
bench-floor: $(STAMP) bench-deps
	$(BIN)/python -m benchmarks.proxy_floor $(BENCH_ARGS)

# nginx (Debian's), the static upstream of the benchmark's (a-static); without it that scenario is skipped.
bench-deps:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }

clean:
	rm -rf $(VENV) build *.egg-info

# ---- Stack checks (scripts/checks/, benchmarks/ab/, benchmarks/locustfile.py) ---------------------------
# `make stack-checks` starts `inventiv up` on a fresh temporary data folder and a free port, runs
# scripts/checks/run-all, ApacheBench and locust against it, stops it and cleans up (scripts/stack-checks).
# The checks alone, against a running stack: API_BASE_URL=... API_KEY=ik_... scripts/checks/run-all
# `make load-tools` installs what it needs, each only when missing: ab (Debian apache2-utils), shellcheck
# (a test lints benchmarks/ab with it) and locust
# (setup.cfg's `load` extra) in a virtualenv of its own, LOAD_VENV: locust brings gevent, which patches the
# standard library when imported, and a pytest plugin; neither belongs in the test environment.
LOAD_VENV ?= $(HOME)/.cache/inventiv/load-venv
LOAD_REQUIREMENTS = $(BIN)/python -c 'import configparser as c; p = c.ConfigParser(); p.read("setup.cfg"); \
	print(" ".join(p["options.extras_require"]["load"].split()))'

.PHONY: load-tools stack-checks soak

load-tools: $(LOAD_VENV)/.installed
	@command -v ab >/dev/null && command -v shellcheck >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apache2-utils shellcheck; }

$(LOAD_VENV)/.installed: setup.cfg | $(STAMP)
	test -x $(LOAD_VENV)/bin/python || $(BIN)/python -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/python -m pip install --quiet $$($(LOAD_REQUIREMENTS))
	touch $@

stack-checks: $(STAMP)
	$(BIN)/python scripts/stack-checks --locust $(LOAD_VENV)/bin/locust

# `make soak` runs benchmarks/soak.py: the gateway at 70 % of its measured maximum with 200 streams open
# for SOAK_MINUTES, RSS, open fds and p99 per interval; exits 1 when RSS or fds grow, or on any error.
# SOAK_ARGS="--rate R" offers a fixed rate instead (CI does: see .ci/run).
# CI runs one (fds, errors and usage rows judged; RSS only from 5 minutes on); the recorded 10-minute run is in benchmarks/RESULTS.md ("Soak").
SOAK_MINUTES ?= 1

soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)
