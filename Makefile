# symgraph — two commands: `make demo` and `make test` (both set everything up first).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,qm9
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow test-triton lint demo showcase bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check symgraph tests examples benchmarks

test: setup lint
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# Triton kernels on the CPU through Triton's interpreter (installs the triton extra).
test-triton: setup
	$(PY) -m pip install -e ".[triton]"
	TRITON_INTERPRET=1 $(PY) -m pytest -m triton tests/ops

demo: setup
	$(PY) examples/qm9_demo.py

showcase: setup
	$(PY) examples/equivariance_showcase.py

bench: setup
	$(PY) benchmarks/basis.py
	$(PY) benchmarks/conv.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
