# Quick start: `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first: the CPU build of torch==2.13.0 is taken before anything can pull a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The headline job: a reduced GAN(TK)² activation sweep (finite vs infinite width) on an embedded
# local Ray, then the comparison table, the finite <-> infinite agreement and the plots.
DEMO_STORAGE ?= runs
demo: $(STAMP)
	$(VENV)/bin/dynagen sweep activations_demo --storage $(DEMO_STORAGE) $(if $(wildcard $(DEMO_STORAGE)/activations_demo),--resume)
	$(VENV)/bin/dynagen results activations_demo --storage $(DEMO_STORAGE) --group-by arch width --metric sinkhorn energy
	$(VENV)/bin/dynagen results activations_demo --storage $(DEMO_STORAGE) --analysis agreement
	$(VENV)/bin/dynagen report activations_demo --storage $(DEMO_STORAGE) --group-by arch width --metric sinkhorn energy

test: $(STAMP)
	$(PY) -m pytest -q

# As modules from the root: run as scripts, benchmarks/platform.py would shadow the stdlib module.
bench: $(STAMP)
	$(PY) -m benchmarks.platform
	$(PY) -m benchmarks.gan_ntk
	$(PY) -m benchmarks.srvp
	$(PY) -m benchmarks.pde

# On a GPU machine, in at most 8 minutes: one table of what ran (README, "GPU acceptance check"). It installs nothing
# from the network: the project's .venv where there is one, else the machine's python3 (with wheels from .whl/).
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info
