# AgentFlow: `make demo` runs the main job on embedded defaults; `make test` installs and tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test-tools demo test unit integration chaos lint check worker flower clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/agentflow demo

# OS tools some tests use (chromium + driver, tini, promtool): installed when missing.
test-tools: install
	bash scripts/install_test_tools.sh

test: install lint test-tools
	bash scripts/test.sh

unit: install
	$(PY) -m pytest -q tests/unit

integration: install test-tools
	bash scripts/test.sh tests/integration

chaos: install
	bash scripts/test.sh -m chaos -s tests/chaos

lint: install
	$(VENV)/bin/ruff check agentflow tests scripts
	$(VENV)/bin/ruff format --check agentflow tests scripts
	$(VENV)/bin/mypy agentflow

check: lint test

worker: install
	$(VENV)/bin/celery -A agentflow worker -l INFO

# Flower on 127.0.0.1:5555; it needs FLOWER_BASIC_AUTH=user:password (docs/security.md).
flower: install
	$(VENV)/bin/celery -A agentflow flower $(FLOWER_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
