# Two commands do all set-up on a fresh machine with Python >= 3.11:
#   make run    - the main job (examples/unrolled_mog.py on its defaults)
#   make test   - the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/unrolled_mog

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python examples/unrolled_mog.py --out $(OUT)

test: install
	$(BIN)/python -m pytest tests

bench: install
	$(BIN)/python benchmarks/unroll_k.py

clean:
	rm -rf $(VENV) runs .pytest_cache
