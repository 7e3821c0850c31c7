# mirrorkeeper — run `make` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Python 3.13 is the Lambda runtime. pyenv machines have it as 3.13.x; elsewhere python3.13 on PATH.
PY313 := $(shell for v in $$(pyenv versions --bare 2>/dev/null | grep '^3\.13' | sort -rV) ""; do \
	PYENV_VERSION=$$v python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
STAMP := $(VENV)/.installed
PY_DIRS := $(wildcard layers functions tests bench)

.PHONY: help install demo test test-unit test-functional test-e2e lint format bench pr clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (Python 3.13) with the package and dev tools; install rsync and node if absent

$(STAMP): requirements-dev.txt layers/mirrorkeeper/pyproject.toml
	@command -v rsync >/dev/null || { echo "rsync not found: installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq rsync >/dev/null; }
	@command -v node >/dev/null || { echo "node not found (the CloudFront Function tests run under it): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq nodejs >/dev/null; }
	@command -v chromium >/dev/null || { echo "chromium not found (the status page's browser test runs it): installing it from Debian packages"; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@if [ -z "$(PY313)" ]; then echo "error: Python 3.13 not found. Install it (pyenv install 3.13 or your OS packages) so that 'python3.13' runs, then rerun make." >&2; exit 2; fi
	@test -x $(BIN)/python || $(PY313) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -e 'layers/mirrorkeeper[ftp,demo]'
	@touch $(STAMP)

demo: install ## the whole pipeline on this machine: sample upstream (rsync daemon), moto server, sync
	$(BIN)/mirrorkeeper demo

test: install lint ## lint, then every test tier (the command CI runs)
	$(BIN)/python -m pytest -n 2 tests

test-unit: install ## unit tests only (no network, no subprocess)
	$(BIN)/python -m pytest tests/unit

test-functional: install ## functional tests (real rsync daemon, moto server)
	$(BIN)/python -m pytest tests/functional

test-e2e: install ## the end-to-end test (real processes only)
	$(BIN)/python -m pytest tests/e2e

lint: install ## ruff and mypy
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy layers/mirrorkeeper/mirrorkeeper

format: install ## apply ruff's formatting and fixes
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

bench: install ## benchmarks with ratios against named baselines (slow; not part of test)
	$(BIN)/python -m pip install -q -r requirements-bench.txt
	$(BIN)/python bench/run.py
	$(BIN)/python bench/frontends.py

pr: test bench ## everything a reviewer would run

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
