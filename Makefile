# onebit: `make demo` trains, exports and runs a tiny ternary model; `make test` runs every test.
# Both build their own virtualenv in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The shared corpus beside a checkout, when there is one; otherwise the data code downloads it.
ONEBIT_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
export ONEBIT_DATA_DIR

.PHONY: all venv demo test test-python clean

all: venv

venv: $(VENV)/.installed

# torch first and exactly pinned: left to the resolver it pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(VENV)/bin/onebit-train --preset tiny --data tinyshakespeare --out runs/tiny
	$(VENV)/bin/onebit-sample runs/tiny --prompt "ROMEO:" -n 300 --seed 1

test: test-python

test-python: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build *.egg-info
