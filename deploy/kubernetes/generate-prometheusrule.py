#!/usr/bin/env python3
"""Generate deploy/kubernetes/base/prometheusrule.yaml from dashboards/prometheus/rules.yml.

The Prometheus Operator loads rules from PrometheusRule objects whose
`spec.groups` is exactly the `groups:` of a Prometheus rule file. The source
of truth stays dashboards/prometheus/rules.yml (tested by promtool there); this
script wraps it. The groups are copied as text, indented under `spec:`, so the
comments and knob markers ([knob: ...]) of the source survive; the result is
then parsed back and compared with the source to prove the copy is exact.

    python3 deploy/kubernetes/generate-prometheusrule.py           # write the file
    python3 deploy/kubernetes/generate-prometheusrule.py --check   # exit 1 on drift
    python3 deploy/kubernetes/generate-prometheusrule.py --stdout  # print it

Needs PyYAML (pip install PyYAML).
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = ROOT / "dashboards" / "prometheus" / "rules.yml"
OUTPUT = HERE / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED FILE, DO NOT EDIT.
# Source: dashboards/prometheus/rules.yml (see its header for the knobs).
# Regenerate: python3 deploy/kubernetes/generate-prometheusrule.py
# deploy/check.sh fails when this file differs from what the script produces.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: talkover-exporter
  labels:
    app.kubernetes.io/name: talkover-exporter
    app.kubernetes.io/component: exporter
spec:
"""


def render(source_text: str) -> str:
    """Return the PrometheusRule YAML for the rule file text."""
    parsed = yaml.safe_load(source_text)
    if not isinstance(parsed, dict) or set(parsed) != {"groups"}:
        raise SystemExit(f"{SOURCE}: expected a mapping with the single key 'groups'")
    if not isinstance(parsed["groups"], list) or not parsed["groups"]:
        raise SystemExit(f"{SOURCE}: 'groups' must be a non-empty list")

    lines = source_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip() == "groups:"]
    if len(starts) != 1:
        raise SystemExit(f"{SOURCE}: expected exactly one top-level 'groups:' line")
    body = []
    for line in lines[starts[0]:]:
        if line.strip() in ("---", "..."):
            raise SystemExit(f"{SOURCE}: a single YAML document is expected")
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise SystemExit(f"{SOURCE}: tab in indentation")
        body.append(("  " + line) if line.strip() else "")
    while body and not body[-1]:
        body.pop()
    text = HEADER + "\n".join(body) + "\n"

    # The textual copy must mean exactly the same as the source.
    generated = yaml.safe_load(text)
    if generated.get("spec", {}).get("groups") != parsed["groups"] or set(generated["spec"]) != {"groups"}:
        raise SystemExit("internal error: generated spec.groups differ from the source groups")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    mode.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args()

    text = render(SOURCE.read_text(encoding="utf-8"))
    rel = OUTPUT.relative_to(ROOT)
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current == text:
            print(f"{rel} is up to date with {SOURCE.relative_to(ROOT)}")
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{rel} (committed)",
                tofile=f"{rel} (generated)",
                n=1,
            )
        )
        print(f"{rel} is stale: run python3 deploy/kubernetes/generate-prometheusrule.py", file=sys.stderr)
        return 1
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
