# The two commands the README promises, plus the pieces they are made of.
# Every target installs what it needs itself (venv, Python packages, pinned npm CLIs).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test prepare lint unit integration e2e fleet bench bench-drills clis ops-system ops-setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# `make run` needs only the daemons and halctl: no test toolchain, no Ansible.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $(RUN_STAMP)

venv: $(STAMP)

## Main job on embedded defaults: supervisor (+ local agent) on loopback, SQLite and a token in ./.state
run: $(if $(wildcard $(STAMP)),$(STAMP),$(RUN_STAMP))
	$(BIN)/hal-supervisor --local --state-dir .state

## Whole test suite (what CI runs). Its set-up steps run side by side (apt and the images need no venv,
## the npm CLIs need neither); each one's output is printed in one piece when it ends.
test:
	$(MAKE) --no-print-directory -j4 --output-sync=target prepare
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder --durations=30

clis:
	bash scripts/install-test-clis.sh
	bash scripts/install-eda.sh

prepare: $(STAMP) clis ops-setup lint

## apt packages, podman config, the systemd test images (root; needs no venv)
ops-system:
	bash scripts/ci-setup.sh system

## the above, then the containers' wheelhouse and the ansible-test stand-in (root)
ops-setup: ops-system $(STAMP)
	bash scripts/ci-setup.sh python

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## One test layer (markers set by tests/conftest.py; costs in the README)
unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m unit

integration: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m process

e2e: $(STAMP) clis
	$(BIN)/pytest -q -p no:cacheprovider -m e2e

fleet: $(STAMP) ops-setup
	$(BIN)/pytest -q -p no:cacheprovider -m fleet

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

## hal-agent RSS/CPU idle and busy, opencode event -> supervisor API latency (real opencode, fake LLM)
.PHONY: bench-agent
bench-agent: $(STAMP) clis
	$(BIN)/python bench/agent.py

## Web console: first paint / interactive of the fleet and sessions views at 2,000 nodes / 20,000 sessions and
## event -> visible-in-page latency, in headless chromium (Debian's chromium + chromium-driver)
.PHONY: bench-console
bench-console: $(STAMP)
	$(BIN)/python bench/console.py

## MTTR per incident and halctl's overhead over plain ansible-playbook (root: podman fleet)
bench-drills: $(STAMP) ops-setup
	$(BIN)/python bench/drills.py

clean:
	rm -rf $(VENV) .tools .state
