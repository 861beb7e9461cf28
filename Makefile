# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: .venv test demo bench clean

.venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

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
