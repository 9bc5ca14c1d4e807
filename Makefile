# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use (CPU torch first, so nothing pulls a CUDA build).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: demo test bench venv clean-demo study

$(BIN)/dreamrelation: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/dreamrelation

venv: $(BIN)/dreamrelation

demo: venv
	$(BIN)/dreamrelation demo -c world-demo

study: venv
	$(BIN)/dreamrelation study

# Two workers, one test file each at a time (a file's module fixtures stay in one process); each
# worker runs torch on one thread (tests/conftest.py), so two fit two cores.
test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: venv
	$(BIN)/python bench/masks.py
	$(BIN)/python bench/train_step.py

clean-demo:
	rm -rf .dreamrelation/demo .dreamrelation/world-demo
