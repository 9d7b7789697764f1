# Two commands: `make demo` and `make test`. Both build .venv from nothing but Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck unit system-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the checks need (Prometheus and promtool for the SLO tests).
system-deps:
	bash scripts/install-system-deps.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed system-deps
	$(VENV)/bin/pytest

test: lint typecheck unit

demo: $(VENV)/.installed
	$(PY) examples/demo.py --duration $(DURATION)

bench: $(VENV)/.installed
	bash benchmarks/run.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
