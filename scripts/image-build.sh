#!/bin/sh
# The build steps the three images (api/, operator/, exporter-image/ Dockerfile) share, kept in
# one place so each Dockerfile holds only what differs: the extras it installs, its home
# directory, environment, labels, health check and entrypoint.
#
# Each Dockerfile bind-mounts this file into a RUN (BuildKit), never COPYs it: no layer of any
# image holds it.
#
#   image-build.sh venv FILE        build stage, run in the source tree: /opt/exportd holding
#                                   exportd[EXTRAS], EXTRAS being FILE's one non-comment line
#                                   (comma-separated, e.g. api,operator): <image>/extras.txt,
#                                   the image's install set, also installed by the parity test
#   image-build.sh runtime [HOME]   final stage: no installers, system user 10001:10001; HOME
#                                   is created and owned by it when given, else /nonexistent
set -eu

# A fixed numeric id lets Kubernetes check runAsNonRoot; the Dockerfiles' USER names it too.
APP_ID=10001
VENV=/opt/exportd

venv() {
  [ -r "$1" ] || { echo "image-build.sh: no extras file: '$1'" >&2; exit 2; }
  extras=$(grep -v '^#' "$1" | tr -d ' \n')
  case "$extras" in
    '' | *[!a-z,]*) echo "image-build.sh: bad extras in $1: '$extras'" >&2; exit 2 ;;
  esac
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
  # The venv is created without pip; the base image's pip installs into it from outside, so
  # the venv the final stage copies holds nothing that can install packages. What is installed
  # is this repository itself: its dependency ranges live in pyproject.toml, the single place
  # versions are kept.
  python -m venv --without-pip "$VENV"
  python -m pip --python "$VENV/bin/python" install ".[$extras]"
}

runtime() {
  home="${1:-/nonexistent}"
  # The interpreter's own pip/setuptools/wheel are not needed at run time; removing them keeps
  # installers out of the image.
  python -m pip uninstall --yes --no-cache-dir pip setuptools wheel
  groupadd --system --gid "$APP_ID" exportd
  useradd --system --uid "$APP_ID" --gid "$APP_ID" --home-dir "$home" --no-create-home \
    --shell /usr/sbin/nologin exportd
  if [ "$home" != /nonexistent ]; then
    install -d -o "$APP_ID" -g "$APP_ID" -m 0750 "$home"
  fi
}

command="${1:-}"
[ "$#" -gt 0 ] && shift
case "$command" in
  venv) [ "$#" -eq 1 ] || { echo "usage: image-build.sh venv FILE" >&2; exit 2; }; venv "$1" ;;
  runtime) [ "$#" -le 1 ] || { echo "usage: image-build.sh runtime [HOME]" >&2; exit 2; }
    runtime "$@" ;;
  *) echo "usage: image-build.sh venv FILE | runtime [HOME]" >&2; exit 2 ;;
esac
