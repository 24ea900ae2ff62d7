"""What every check shares: the repository's paths, the report a check writes, running a tool, reading files."""
import pathlib
import subprocess
import sys

try:
    import yaml
except ImportError:  # deploy/check.sh installs PyYAML; --list works without it
    yaml = None



ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose"
# Kubernetes versions the built-in manifests are validated against:
# 1.28 is the oldest one the sharded variant works on (pod-index label on
# StatefulSet pods), 1.34 a recent release.
K8S_VERSIONS = ("1.28.0", "1.34.0")
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}




class Report:
    """What one check found: each problem is printed as it is found."""

    def __init__(self, out=None):
        self.problems = []
        self.out = out  # None: sys.stdout at the time of writing

    def write(self, text):
        (sys.stdout if self.out is None else self.out).write(text)

    def say(self, line):
        self.write(f"  {line}\n")

    def fail(self, msg):
        self.problems.append(msg)
        self.say(f"FAIL: {msg}")

    def finish(self, ok_msg):
        """Exit status of the check, after its last line."""
        if self.problems:
            self.say(f"{len(self.problems)} problem(s)")
            return 1
        self.say(f"ok: {ok_msg}")
        return 0


def run(args, stderr=subprocess.STDOUT):
    """Run a tool, its output captured as text (stderr merged by default)."""
    sys.stdout.flush()
    try:
        return subprocess.run(args, stdout=subprocess.PIPE, stderr=stderr, text=True, errors="replace")
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, f"{args[0]}: command not found\n", "")


def indent(text, drop_blank=False):
    """`sed 's/^/  /'` (with drop_blank: `sed '/^ *$/d; s/^/  /'`)."""
    if not text:
        return ""
    lines = text.split("\n")
    newline_at_end = lines[-1] == ""
    if newline_at_end:
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        if drop_blank and not line.strip(" "):
            continue
        out.append("  " + line + ("\n" if newline_at_end or i < len(lines) - 1 else ""))
    return "".join(out)


def text_lines(text):
    """The lines of a file as grep and sed see them."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_raw(path):
    """A file's text, line ends untouched; empty if it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def rel(p):
    try:
        return str(pathlib.Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def is_crd(doc):
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def ident(doc):
    return (doc.get("kind"), (doc.get("metadata") or {}).get("name"))


# -- the Dockerfile -----------------------------------------------------------
