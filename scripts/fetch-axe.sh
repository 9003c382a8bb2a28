#!/usr/bin/env bash
# Fetch axe-core (the accessibility engine the web page tests run in Chromium) from npm: the
# tarball is pinned by version and sha256, unpacked once into .tools/ (gitignored) and reused.
#
# Prints the path of axe.min.js on stdout.
set -euo pipefail

PACKAGE="axe-core"
VERSION="4.11.0"
SHA256="39bed7d72308f6d620789c169d699bfd7e8da80f65b545821a6b2215c3e83107"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${EXPORTD_TOOLS_DIR:-$ROOT/.tools}"
CACHE="$TOOLS/cache"
TARGET="$TOOLS/axe-core-$VERSION/axe.min.js"

if [[ -f "$TARGET" ]]; then
  echo "$TARGET"
  exit 0
fi

# shellcheck source=scripts/npm-tarball.sh
source "$ROOT/scripts/npm-tarball.sh"
TARBALL="$(npm_tarball "$CACHE" "$PACKAGE" "$VERSION" "$SHA256")"

WORK="$(mktemp -d "$TOOLS/.unpack.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$TARBALL" -C "$WORK" package/axe.min.js
mkdir -p "$(dirname "$TARGET")"
mv "$WORK/package/axe.min.js" "$TARGET"
echo "$TARGET"
