# llcr — one venv (.venv), the same commands locally and in CI (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-dev up test lint format typecheck check clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[agent,streams,embedded,report]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed-run ## Set up .venv with what the pipeline needs

install-dev: $(VENV)/.installed-dev ## Set up .venv with everything plus test and lint tools

up: install ## Set up and run the whole pipeline on this machine (ARGS="--duration 60")
	$(BIN)/llcr up $(ARGS)

test: install-dev ## Set up and run the full test suite (integration tests start Tansu and chDB)
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED: pytest collected no tests" >&2; fi; \
	exit $$rc

lint: install-dev ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install-dev ## mypy --strict on schemas, agents, streams
	$(BIN)/mypy

check: lint typecheck test ## Everything CI runs

clean: ## Remove the venv and caches (runs of `up` stay in $LLCR_HOME, ~/.local/share/llcr)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .llcr-data *.egg-info
