# Local stack, demo and tests. Every target installs and starts what it needs.
SHELL := /bin/bash
PYTHON := .venv/bin/python
STATE := $(or $(DEVSTACK_STATE_DIR),$(CURDIR)/.stack)
WITH_STACK_ENV := set -a && source $(STATE)/env && set +a &&

.PHONY: install stack demo test unit e2e lint down status

install:
	bash scripts/install.sh

stack: install
	$(PYTHON) -m devstack up

# Bootstrap, deploy both example flows through deploy-flow, run each once, print final states.
demo: stack
	$(WITH_STACK_ENV) $(PYTHON) -m meta_flows.bootstrap
	$(WITH_STACK_ENV) $(PYTHON) -m devstack workers
	$(WITH_STACK_ENV) $(PYTHON) -m devstack.demo

test: stack
	$(WITH_STACK_ENV) $(PYTHON) -m pytest tests

unit: install
	$(PYTHON) -m pytest tests/unit tests/devstack -m "not e2e"

lint: install
	$(PYTHON) -m ruff check meta_flows blocks flows devstack tests
	$(PYTHON) -m mypy meta_flows blocks

status:
	$(PYTHON) -m devstack status

down:
	$(PYTHON) -m devstack down
