# Two commands for a newcomer: `make run` (the main job on an embedded local Ray) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; GPU users override, e.g. `make TORCH_SPEC="torch==2.13.0" ...`
# with the CUDA index configured in pip, or install torch into .venv first (it is kept).
TORCH_SPEC ?= torch==2.13.0
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled
RUN_DIR ?= runs/make-run

.PHONY: venv run test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) jobs/run_all.py --out $(RUN_DIR)

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf runs .pytest_cache
