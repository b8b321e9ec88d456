# The project's commands. Everything runs inside the environment made by `make setup`
# (a venv, or a Debian 13 chroot on Debian 12 hosts; see README.md).
#   make test       every test (CI: .ci/run); 35 to 55 minutes on 2 cores with set-up
#   make test-fast  the tests not marked slow (no pipeline run, model server, Airflow or
#                   benchmark); about 3 minutes
#   make lint       ruff check . (configuration in pyproject.toml; tests/test_lint.py runs it too)
# A test that runs the pipeline, a server, Airflow or a benchmark, or takes more than ~10 s, is
# marked @pytest.mark.slow (the marker is registered in pyproject.toml).
SHELL := /bin/bash
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: setup airflow test test-fast lint demo lock clean-env

setup:
	@bash scripts/setup.sh

# Airflow 3 in its own venv inside the environment (the DAG test needs it).
airflow: setup
	@bash scripts/setup_airflow.sh

# Every test, slow ones included.
test: setup airflow
	bin/env python -m pytest -q tests $(PYTEST_ARGS)

# The fast tier: -m "not slow" deselects the pipeline, serving, Airflow and benchmark tests.
test-fast: setup
	bin/env python -m pytest -q -m "not slow" tests $(PYTEST_ARGS)

lint: setup
	bin/env ruff check .

demo: setup
	bin/cscnn data sample --out $(DEMO_DIR)/data --seed 1
	bin/cscnn pipeline run --data $(DEMO_DIR)/data --output $(DEMO_DIR)/out

# Re-resolves requirements.in into requirements.lock inside the environment.
lock: setup
	bin/env bash -c 'python -m venv /tmp/cscnn-lock && /tmp/cscnn-lock/bin/pip install -q -r requirements.in && \
	  { sed -n 1,3p requirements.lock; /tmp/cscnn-lock/bin/pip freeze | grep -v -E "^(-e |pip==)"; } > requirements.lock.new && \
	  mv requirements.lock.new requirements.lock && rm -rf /tmp/cscnn-lock'

clean-env:
	rm -rf .rootfs .rootfs.debootstrap.log .venv
