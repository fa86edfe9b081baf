# Two commands do all set-up on a fresh machine with Python >= 3.11:
#   make run    - the main job (python -m examples.unrolled_mog on its defaults);
#                 installs jgan[examples] only: no TensorFlow, no torch
#   make test   - the test suite (what .ci/run calls); installs jgan[dev]
# Each extra has its own stamp in the venv: `make run` then `make test` adds
# the dev packages to the same .venv, and editing pyproject.toml reinstalls.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/unrolled_mog
PIP    := $(BIN)/python -m pip install --quiet

.PHONY: install-examples install-dev run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed-examples: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[examples]'
	touch $@

# dev includes examples, so its install stamps both.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $(VENV)/.installed-examples $@

install-examples: $(VENV)/.installed-examples

install-dev: $(VENV)/.installed-dev

# --resume: a second `make run` continues an interrupted run or rewrites a
# finished one's outputs (an empty OUT trains from scratch).
run: install-examples
	$(BIN)/python -m examples.unrolled_mog --out $(OUT) --resume

# pytest exits 5 when it collects no test; make fails on it like on any
# non-zero code, so .ci/run fails too.
test: install-dev
	$(BIN)/python -m pytest tests

# The benchmarks compare against the reference libraries (PyTorch, OTT-JAX,
# POT): the dev extras.
bench: install-dev
	$(BIN)/python -m benchmarks.unroll_k --out runs/bench
	$(BIN)/python -m benchmarks.train_speed --out runs/train_speed

clean:
	rm -rf $(VENV) runs .pytest_cache
