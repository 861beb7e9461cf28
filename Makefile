# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: .venv test lint demo bench clean

.venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests

# Lint, format and type checks (configured in pyproject.toml); part of `make test`, so CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check engine sweep analysis tests benchmarks
	$(BIN)/ruff format --check engine sweep analysis tests benchmarks
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/xbar-sweep run examples/quickstart.yaml

bench: $(STAMP)
	$(BIN)/python -m benchmarks.engine
	$(BIN)/python -m benchmarks.irdrop
	$(BIN)/python -m benchmarks.sweep
	$(BIN)/python -m benchmarks.training
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.cli

clean:
	rm -rf $(VENV) results .pytest_cache
