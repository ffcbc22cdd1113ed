# ibflow — the two commands: `make run` (whole system, embedded infra) and `make test`.
# Works on a bare machine: installs uv with pip if missing, then `uv sync --locked`.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
export UV_PYTHON_DOWNLOADS ?= never
export UV_LINK_MODE ?= copy
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
SRC := shared/src/ibflow $(wildcard services/*/src/ibflow_*)

.PHONY: help bootstrap sync lint format typecheck unit pytest test chaos run bench schemas clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap: ## install uv if missing
	@command -v uv >/dev/null 2>&1 || test -x $(UV) || $(PYTHON) -m pip install --quiet uv 2>/dev/null \
		|| $(PYTHON) -m pip install --quiet --user uv
	@test -x $(UV) || command -v uv >/dev/null 2>&1 || { echo "uv could not be installed" >&2; exit 1; }

sync: bootstrap ## create .venv from the committed uv.lock
	@$(shell command -v uv 2>/dev/null || echo $(UV)) sync --locked --quiet

lint: sync ## ruff lint + format check
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .

format: sync ## apply ruff format and autofixes
	$(UV_RUN) ruff format .
	$(UV_RUN) ruff check --fix .

typecheck: sync ## mypy --strict over every src package
	$(UV_RUN) mypy $(SRC)

# `make test` runs the fast chaos scenarios (marker chaos_fast) and leaves the rest to `make chaos`
PYTEST_MARKERS ?= not chaos or chaos_fast

pytest: sync ## all tests but the slow chaos scenarios (unit + integration against real servers)
	$(UV_RUN) pytest -m "$(PYTEST_MARKERS)" $(PYTEST_ARGS)

test: lint typecheck pytest ## lint + type check + all tests (fast chaos subset included)

chaos: sync ## the whole chaos suite (tests/chaos, docs/reliability.md; CHAOS_ARGS=-k ...)
	$(UV_RUN) pytest tests/chaos -m chaos $(CHAOS_ARGS)

run: sync ## start the whole system on the embedded default (Ctrl-C stops it)
	$(UV_RUN) ibflow-devstack

bench: sync ## the whole system against its measured floor, one run (docs/performance.md; BENCH_ARGS=--quick)
	$(UV_RUN) python bench/run.py $(BENCH_ARGS)

schemas: sync ## regenerate shared/schemas/v1, docs/events.md and docs/asyncapi.yaml after a contract change
	$(UV_RUN) python -m ibflow.contracts.schemas --write
	$(UV_RUN) python -m ibflow.contracts.catalogue_doc --write
	$(UV_RUN) python -m ibflow.contracts.asyncapi --write

clean: ## remove caches (keeps .ibflow data)
	rm -rf .mypy_cache .ruff_cache .pytest_cache

UV_RUN = $(shell command -v uv 2>/dev/null || echo $(UV)) run --locked --no-sync
