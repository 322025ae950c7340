# Two commands: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench figures venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=disabled $(PY) -m gnn_jepa.demo

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q

test-fast: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.simulate --no-toytrack
	$(PY) -m benchmarks.radius_graph

figures: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/make_figures.py

clean:
	rm -rf $(VENV) build *.egg-info
