#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian's prometheus
# package for promtool and a real Prometheus server, Alertmanager, and
# Chromium for the status pages' browser test), then runs the Rust
# tests and the rules/dashboard checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkg() {
  local bin=$1 pkg=$2
  command -v "$bin" >/dev/null 2>&1 && return 0
  echo "== installing Debian package $pkg (for $bin)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

need_pkg promtool prometheus
need_pkg prometheus prometheus
need_pkg prometheus-alertmanager prometheus-alertmanager
need_pkg python3 python3
need_pkg prlimit util-linux
need_pkg chromium chromium

echo "== cargo test"
cargo test --locked --all-targets

echo "== rules and dashboard"
bash dashboards/check.sh

echo "== deployment artifacts (Dockerfile, Kubernetes, compose)"
bash deploy/check.sh
