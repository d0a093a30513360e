# Two commands for a newcomer: `make run` (the main job on an embedded local Ray) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: the CPU build by default (on this project's machines `torch==2.13.0` comes from local disk).
# GPU users: install a CUDA torch into .venv first (it is kept), or `make TORCH_SPEC="torch==X.Y" ...`.
TORCH_SPEC ?= torch==2.13.0
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled
RUN_DIR ?= runs/make-run
# `make cluster-up`: a one-machine Ray head whose jobs run with .venv's Python (README, "As a Ray job").
CLUSTER_DIR ?= runs/cluster
CLUSTER_PORT ?= 6379
CLUSTER_DASHBOARD_PORT ?= 8265
CLUSTER_ARGS ?=

.PHONY: venv run test test-fast bench clean cluster-up cluster-down

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) jobs/run_all.py --out $(RUN_DIR) --overwrite

test: venv
	$(PY) -m pytest -q tests

# the unit tests alone (no Ray, no jobs): about two minutes on a 2-core CPU; `make test` runs everything (CI)
test-fast: venv
	$(PY) -m pytest -q -m unit tests

# builds .venv only when it has no Ray yet (a rebuild under a running cluster would change its Python)
cluster-up: $(if $(wildcard $(VENV)/bin/ray),,venv)
	$(PY) jobs/cluster.py up --dir $(CLUSTER_DIR) --port $(CLUSTER_PORT) --dashboard-port $(CLUSTER_DASHBOARD_PORT) -- $(CLUSTER_ARGS)

cluster-down:
	$(PY) jobs/cluster.py down --dir $(CLUSTER_DIR)

bench: venv
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf runs .pytest_cache
