# Two entry points for a new machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# `make test-fast`: the tests that need no child `essx run` and no browser, on parallel pytest-xdist workers,
# each with its own anvil and databases. Two per core: the tests wait on the chain and on background loops
# about half of the time (2 cores: 2 workers 208 s, 4 workers 171 s). `make test` stays the whole suite.
# Compiled modules are cached even where the environment says PYTHONDONTWRITEBYTECODE: otherwise every worker
# (and every child `python -c`) compiles the service and pytest rewrites ~450 test and plugin modules again,
# about 5 s of CPU per worker.
FAST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

.PHONY: run test test-fast lint typecheck pytest contracts contracts-check install clean-data bench

install: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/essx run

test: install lint typecheck pytest

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_layers.py

typecheck: $(PY_STAMP)
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	PYTHONDONTWRITEBYTECODE= ESSX_FUZZ_EXAMPLES=3 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(FAST_WORKERS) -m "not process and not browser"

contracts: $(NODE_STAMP)
	node contracts/build.mjs

contracts-check: $(NODE_STAMP)
	node contracts/build.mjs --check

bench: install
	$(BIN)/python -m bench.run_all

clean-data:
	rm -rf data
