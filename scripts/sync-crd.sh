#!/usr/bin/env bash
# Copy the CRDs (ExportRequest, ExportSchedule) into the Helm chart. crds/exportrequest.yaml is the source of truth;
# the chart ships an identical copy (Helm installs files under charts/*/crds/ before templates),
# and tests/unit/test_chart_render.py fails while the two differ.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
install -m 0644 "$ROOT/crds/exportrequest.yaml" "$ROOT/charts/exportd/crds/exportrequest.yaml"
echo "charts/exportd/crds/exportrequest.yaml now equals crds/exportrequest.yaml"
install -m 0644 "$ROOT/crds/exportschedule.yaml" "$ROOT/charts/exportd/crds/exportschedule.yaml"
echo "charts/exportd/crds/exportschedule.yaml now equals crds/exportschedule.yaml"
