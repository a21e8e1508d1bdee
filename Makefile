# Consentry — two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOME_DIR ?= .consentry
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_ARGS ?= --users 20000 --posts 200000 --access-events 60000 --seed 7

.PHONY: install run test lint typecheck pytest bench mutate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: install, create the home, generate the demo platform unless present, load it,
## run one delivery-and-revocation cycle on it (skipped when done: docs/demo.md), serve.
run: $(STAMP)
	$(BIN)/consentry --home $(HOME_DIR) init
	@if [ ! -d $(HOME_DIR)/demo ]; then $(BIN)/consentry --home $(HOME_DIR) demo generate --no-load $(DEMO_ARGS); fi
	$(BIN)/consentry --home $(HOME_DIR) demo load
	$(BIN)/consentry --home $(HOME_DIR) demo cycle
	$(BIN)/consentry --home $(HOME_DIR) serve --host $(HOST) --port $(PORT)

## make test: install or update, then ruff, mypy --strict, pytest.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

## make mutate: mutation testing of the rule and verification modules, one package at a time,
## each mutant against its own package's tests; writes docs/mutation-report.md (docs/testing.md).
## Not part of `make test`. MUTATE_ARGS="ledger audit" runs some packages only.
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py run $(MUTATE_ARGS)

bench: $(STAMP)
	@set -e; for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
