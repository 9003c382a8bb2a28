#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python: LibreOffice Calc (headless), the real
# spreadsheet client that checks XLSX files (`soffice --headless --convert-to csv`).
# Chromium: the browser the web page tests drive through Playwright (/usr/bin/chromium; never
# a Playwright browser download).
# Idempotent: installs only what is missing; apt-get update runs only when something is.
set -euo pipefail

PACKAGES=(libreoffice-calc-nogui chromium)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v soffice >/dev/null || { echo "soffice not found after install" >&2; exit 1; }
test -x /usr/bin/chromium || { echo "/usr/bin/chromium not found after install" >&2; exit 1; }
echo "system deps: ${PACKAGES[*]} present"
