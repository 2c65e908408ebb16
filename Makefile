# keyturn — everything a developer or CI runs goes through these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck unit bench demo clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "keyturn needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

## The README's test command: lint, type-check core/, then the whole suite.
test: lint typecheck unit

lint: $(STAMP)
	$(VENV)/bin/ruff check core bot adapters tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy core

unit: $(STAMP)
	$(PY) -m pytest

## Benchmarks print ratios against references measured in the same run.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m tests.bench

## The README's main-job command: keyturn on embedded defaults.
demo: $(STAMP)
	$(VENV)/bin/keyturn demo --out keyturn-data/demo-out

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
