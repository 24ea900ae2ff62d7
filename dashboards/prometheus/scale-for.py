#!/usr/bin/env python3
"""Print a rules file with every alert's `for:` divided by FACTOR.

    scale-for.py FACTOR [RULES_FILE] > derived-rules.yml

RULES_FILE defaults to rules.yml next to this script. The output is the input
byte for byte except the value of each `for:` (and `keep_firing_for:`) key:
expressions, windows (`[15m]`), thresholds, labels and annotations are
unchanged. Use it to see the alerts fire in seconds instead of minutes in
tests and demos (the end-to-end test tests/alert_path_e2e.rs runs the rules
with FACTOR 20: `for: 2m` becomes `for: 6s`). Never deploy the derived file:
rules.yml stays the single source; write the output to a temporary file.

Needs only python3 (no PyYAML). It rewrites lines, so it refuses a `for:` it
cannot parse; `for:` inside block scalars (`|`, `>-`) is text, not a key,
and is left alone.
"""

import re
import sys
from pathlib import Path

# Prometheus duration units, in milliseconds.
UNITS_MS = {
    "y": 365 * 24 * 3600 * 1000,
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
FOR_LINE = re.compile(
    r"^(?P<head>\s*(?:-\s+)?(?:for|keep_firing_for):\s*)(?P<value>\S+?)(?P<tail>\s*(?:#.*)?)$"
)
# A key whose value is a block scalar: `key: |`, `key: >-`, `- key: |2` ...
BLOCK_START = re.compile(r"^(?P<indent>\s*(?:-\s+)?)[^\s#][^:]*:\s*[|>][-+0-9]*\s*(?:#.*)?$")


def parse_ms(text):
    """Milliseconds of a Prometheus duration such as 2m, 1h30m, 500ms."""
    pos, total = 0, 0
    for match in DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return total


def format_ms(ms):
    """The shortest Prometheus duration for ms (whole seconds as 1h2m3s)."""
    if ms == 0:
        return "0s"
    if ms % 1000:
        return f"{ms}ms"
    out, rest = "", ms
    for unit in ("h", "m", "s"):
        n, rest = divmod(rest, UNITS_MS[unit])
        if n:
            out += f"{n}{unit}"
    return out


def scale(text, factor):
    """(rewritten text, number of durations scaled)."""
    out, count = [], 0
    block_indent = None  # indentation of the key owning the current block scalar
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        body = line.rstrip("\r\n")
        indent = len(body) - len(body.lstrip())
        if block_indent is not None:
            if not body.strip() or indent > block_indent:
                out.append(line)
                continue
            block_indent = None
        start = BLOCK_START.match(body)
        if start:
            block_indent = len(start.group("indent"))
            out.append(line)
            continue
        match = FOR_LINE.match(body)
        if match:
            try:
                ms = parse_ms(match.group("value").strip("'\""))
            except ValueError as err:
                sys.exit(f"scale-for.py: line {lineno}: {err}")
            scaled = max(1, round(ms / factor)) if ms else 0
            line = f"{match.group('head')}{format_ms(scaled)}{match.group('tail')}{line[len(body):]}"
            count += 1
        out.append(line)
    return "".join(out), count


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    try:
        factor = float(sys.argv[1])
    except ValueError:
        factor = 0.0
    if not factor > 0:
        sys.exit(f"scale-for.py: FACTOR must be a number > 0, got {sys.argv[1]!r}")
    path = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).with_name("rules.yml")
    text, count = scale(path.read_text(), factor)
    if count == 0:
        sys.exit(f"scale-for.py: no `for:` found in {path}")
    sys.stdout.write(text)
    print(f"scale-for.py: {count} `for:` durations of {path} divided by {sys.argv[1]}", file=sys.stderr)


if __name__ == "__main__":
    main()
