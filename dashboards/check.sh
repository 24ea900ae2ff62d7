#!/usr/bin/env bash
# Validates the Prometheus rules, their unit tests and the Grafana dashboard.
# Needs promtool (Debian: apt-get install prometheus) and python3 on PATH,
# and Prometheus 3.5's promtool and vmalert in target/test-tools (the test
# command, scripts/test.sh, unpacks them there from Debian's unstable suite).
set -euo pipefail

cd "$(dirname "$0")"
tools="${TALKOVER_TEST_TOOLS:-$PWD/../target/test-tools}/usr/bin"

echo "== promtool check rules (2.42, 3.5)"
promtool check rules prometheus/rules.yml
"$tools/promtool" check rules prometheus/rules.yml

echo "== promtool test rules (2.42, 3.5: closed and open range windows)"
(cd prometheus && promtool test rules rules_test.yml)
(cd prometheus && "$tools/promtool" test rules rules_test.yml)

echo "== vmalert loads the same rules (MetricsQL)"
"$tools/vmalert" -dryRun -loggerLevel=ERROR -rule=prometheus/rules.yml

echo "== dashboard JSON"
python3 -m json.tool talkover-webhooks.json >/dev/null

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Structural checks; also writes every panel query (with Grafana variables
# substituted the way the end-to-end test does) into a rules file so that
# promtool parses each one.
python3 - talkover-webhooks.json "$tmp/dashboard_exprs.yml" <<'EOF'
import json
import re
import sys

path, rules_out = sys.argv[1], sys.argv[2]
dash = json.load(open(path))
errors = []

if dash.get("id") is not None:
    errors.append("dashboard id must be null")
if not dash.get("uid"):
    errors.append("dashboard uid missing")

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource":
    errors.append("missing datasource template variable")
for name in ("job", "instance", "campaign", "agent", "webhook", "event"):
    v = variables.get(name)
    if v is None:
        errors.append(f"missing template variable {name}")
    elif not (v.get("type") == "query" and v.get("multi") and v.get("includeAll") and v.get("allValue") == ".*"):
        errors.append(f"variable {name}: want query, multi, includeAll, allValue .*")

# Every datasource reference must be the template variable (no hard-coded uid).
def walk(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                uid = value.get("uid") if isinstance(value, dict) else value
                if uid not in ("${datasource}", "$datasource"):
                    errors.append(f"{where}: hard-coded datasource {value!r}")
            else:
                walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk(value, f"{where}[{i}]")

walk(dash, "dashboard")

panels = []
for p in dash.get("panels", []):
    panels.append(p)
    panels.extend(p.get("panels", []))  # collapsed rows

ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)):
    errors.append("duplicate panel ids")

exprs = []
for p in panels:
    title = p.get("title", "?")
    if not str(p.get("description", "")).strip():
        errors.append(f"panel {title!r}: no description")
    if p.get("type") == "row":
        continue
    targets = p.get("targets", [])
    if not targets:
        errors.append(f"panel {title!r}: no targets")
    for t in targets:
        expr = t.get("expr", "")
        if not expr.strip():
            errors.append(f"panel {title!r}: empty expr")
            continue
        if re.search(r"\[\s*\d+[smhd]\s*\]", expr):
            errors.append(f"panel {title!r}: fixed range window, use $__rate_interval: {expr}")
        sub = expr.replace("$__rate_interval", "1m")
        sub = re.sub(r"\$\{?\w+\}?", ".*", sub)
        exprs.append(sub)

with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard-exprs\n    rules:\n")
    for i, expr in enumerate(exprs):
        f.write(f"      - record: dashboard_expr_{i}\n        expr: {json.dumps(expr)}\n")

if errors:
    print("\n".join("ERROR: " + e for e in errors))
    sys.exit(1)
print(f"  {len(panels)} panels, {len(exprs)} queries: structure OK")
EOF

echo "== dashboard queries parse (promtool)"
promtool check rules "$tmp/dashboard_exprs.yml"

echo "ALL CHECKS PASSED"
