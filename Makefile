# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The install stamp is keyed on the dependency spec: editing pyproject.toml reinstalls, nothing else does.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
# Keep test runs inside the 2-core budget and deterministic.
TEST_ENV := CDDFM3D_FAST=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES= PLOTLY_RENDERER=plotly_mimetype
PYTEST_ARGS ?=

.PHONY: demo test unit notebooks bench clean-notebooks install

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m cddfm3d demo --out out

test: $(STAMP)
	$(PY) tools/clean_notebooks.py --check notebooks
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) tests
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 $(PYTEST_ARGS) notebooks

unit: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) tests

notebooks: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks

bench: $(STAMP)
	$(PY) benchmarks/bench_generator.py

clean-notebooks: $(STAMP)
	$(PY) tools/clean_notebooks.py notebooks
