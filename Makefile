# Two commands do everything: `make up` runs the whole system, `make test` checks it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck pytest bench clean

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

# `make bench BENCH_ARGS=--quick` for a smoke run; see benchmarks/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.gateway_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
