# Quick start: `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first: the CPU build of torch==2.13.0 is taken before anything can pull a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dynagen demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/platform.py
	$(PY) benchmarks/gan_ntk.py
	$(PY) benchmarks/srvp.py
	$(PY) benchmarks/pde.py

clean:
	rm -rf $(VENV) build *.egg-info
