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
need_pkg chromedriver chromium-driver

# Prometheus 3.5 LTS (with its promtool) and VictoriaMetrics (with vmalert)
# from Debian's unstable suite, unpacked into this run's own folder, never
# installed over bookworm's packages: apt-get downloads the .debs through a
# temporary sources list that reuses the mirror this machine's apt sources
# name. The tests find them in target/test-tools (unstable_tool()).
fetch_unstable() {
  local tools="$PWD/target/test-tools" work="$PWD/target/test-tools.apt"
  if [ -x "$tools/usr/bin/prometheus" ] && [ -x "$tools/usr/bin/promtool" ] && [ -x "$tools/usr/bin/vmalert" ]; then
    return 0
  fi
  local mirror
  # Either file style may be absent (cat then fails, which pipefail would
  # make fatal): only what grep finds counts.
  mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ' || true)
  [ -n "$mirror" ] || { echo "no Debian mirror in the apt sources" >&2; return 1; }
  echo "== fetching prometheus 3.5, promtool and victoria-metrics from Debian unstable"
  rm -rf "$work" && mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$tools"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} unstable main" > "$work/sources.list"
  local apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root)
  apt-get "${apt[@]}" -qq update
  (cd "$work" && apt-get "${apt[@]}" -qq download prometheus promtool victoria-metrics)
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$tools"; done
  "$tools/usr/bin/prometheus" --version | head -n 1
  rm -rf "$work"
}
fetch_unstable

# Both tiers: `--features e2e` adds the tests with the real servers and
# the browser installed above.
echo "== cargo test (with the e2e tier)"
cargo test --locked --workspace --all-targets --features e2e

echo "== rules and dashboard"
bash dashboards/check.sh

echo "== deployment artifacts (Dockerfile, Kubernetes, compose)"
bash deploy/check.sh
