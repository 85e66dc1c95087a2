# Two commands: `make run` and `make test`. Both bootstrap everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests run in parallel processes, each with its own databases (a SQLite file and a private
# PostgreSQL schema) and its own loopback ports: one per core, at most four (each holds a few
# PostgreSQL connections); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 4 ? 4 : n )))

.PHONY: run test test-fast lint typecheck bench venv services debian node clean demo

# Progress while installing: one line per package pip fetches (the first run takes minutes).
$(STAMP): pyproject.toml requirements.lock
	@echo "Setting up $(VENV): mailveil and its pinned dependencies (first time: a few minutes)..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@set -o pipefail; $(BIN)/python -m pip install --progress-bar off -c requirements.lock \
	  -e '.[dev]' | { grep --line-buffered -E '^(Collecting|Installing collected|Successfully)' \
	  || true; } | sed -u -e 's/^Collecting /  fetching /' -e 's/^Installing collected packages:.*/  installing.../'
	@touch $(STAMP)
	@echo "$(VENV) is ready."

venv: $(STAMP)

## The service on its embedded defaults: SQLite in ./var, local keys, loopback ports.
run: $(STAMP)
	$(BIN)/mailveil init
	$(BIN)/mailveil serve

debian:
	@scripts/ensure-debian.sh

services:
	@scripts/ensure-services.sh

node: debian
	@scripts/ensure-node-tools.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict tools/mailveil_verify.py

## Lint, type-check and the whole suite on SQLite and PostgreSQL.
test: $(STAMP) debian node services lint typecheck
	@set +e; $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

## The suite without the tests marked slow: the developer's loop (make test is the gate).
test-fast: $(STAMP) debian node services
	@set +e; $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

## Both incidents replayed end to end in one process (under a minute).
demo: $(STAMP)
	$(BIN)/mailveil demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
