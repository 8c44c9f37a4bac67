# Local stack, demo and tests. Every target installs and starts what it needs.
SHELL := /bin/bash
PYTHON := .venv/bin/python
STATE := $(or $(DEVSTACK_STATE_DIR),$(CURDIR)/.stack)
WITH_STACK_ENV := set -a && source $(STATE)/env && set +a &&

.PHONY: install stack demo test unit e2e lint down status bench

install:
	bash scripts/install.sh

stack: install
	$(PYTHON) -m devstack up

# Bootstrap, deploy both example flows through deploy-flow, run each once, print final states.
demo: stack
	$(WITH_STACK_ENV) $(PYTHON) -m meta_flows.bootstrap
	$(WITH_STACK_ENV) $(PYTHON) -m devstack workers
	$(WITH_STACK_ENV) $(PYTHON) -m devstack.demo

# The runner's own end-to-end tests reuse the stack's runner, one per emulator.
RUNNER_E2E_ENV := RUNNER_E2E_AWS_ENDPOINT=$$AWS_ENDPOINT_URL RUNNER_E2E_DOCKER_HOST=$$DOCKER_HOST \
	RUNNER_E2E_BASE_IMAGE=$$META_FLOWS_BASE_IMAGE RUNNER_E2E_STATE_DIR=$$DEVSTACK_STATE_DIR \
	RUNNER_E2E_RUNNER_LOG=$$DEVSTACK_STATE_DIR/logs/task-runner.log

test: stack
	$(WITH_STACK_ENV) $(PYTHON) -m devstack runner
	$(WITH_STACK_ENV) $(RUNNER_E2E_ENV) $(PYTHON) -m pytest tests

# The benchmark against `prefect deploy` (docs/performance.md); about 30 minutes on 2 cores.
bench: stack
	$(WITH_STACK_ENV) DEVSTACK_PREFECT_DB=postgres bash scripts/install.sh
	$(WITH_STACK_ENV) $(PYTHON) -m bench.run

unit: install
	$(PYTHON) -m pytest tests/unit tests/devstack -m "not e2e"

lint: install
	$(PYTHON) -m ruff check meta_flows blocks flows devstack tests bench
	$(PYTHON) -m mypy meta_flows blocks

status:
	$(PYTHON) -m devstack status

down:
	$(PYTHON) -m devstack down
