"""Offline checks of the deployment artifacts: the Dockerfile, the Kubernetes
manifests (deploy/kubernetes), the demo stack (deploy/compose).

`deploy/check.sh` installs the tools these checks call (hadolint,
kubernetes-validate, promtool, amtool, PyYAML), then runs this program:

    python3 deploy/checks.py                 # every check
    python3 deploy/checks.py hadolint k8s-crds
    python3 deploy/checks.py --list          # names of the checks
    python3 deploy/checks.py --run-one NAME  # one check, in this process

Each check runs in its own process (`--run-one`), all checks run even when one
fails, and the exit status is non-zero if any failed. Nothing here talks to a
cluster or a container engine; if kubectl is on PATH, its built-in kustomize
cross-checks the rendering. `deploy/test_checks.py` tests the checks
(`python3 -m unittest discover -s deploy -p 'test_*.py'`, the
`checks-selftest` check).
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # deploy/check.sh installs PyYAML; --list works without it
    yaml = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
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
def check_hadolint(report):
    # Fails on any finding, down to style level (hadolint's default threshold
    # would let style and info findings pass).
    res = run(["hadolint", "--no-color", "--failure-threshold", "style", "Dockerfile"])
    out = res.stdout.rstrip("\n")
    if res.returncode != 0 or out:
        report.write(out + "\n")
        return 1
    version = re.search(r"[0-9][0-9.]*", run(["hadolint", "--version"], stderr=None).stdout)
    report.say(f"ok: hadolint {version.group(0) if version else ''}: no findings")
    return 0


def cargo_version(cargo_toml):
    """`sed -n '/^\\[package\\]/,/^\\[/ s/^version *= *"\\(.*\\)"/\\1/p' Cargo.toml`"""
    found, in_package = [], False
    for line in text_lines(cargo_toml):
        if in_package:
            in_package = not line.startswith("[")
        elif line.startswith("[package]"):
            in_package = True
        else:
            continue
        m = re.match(r'version *= *"(.*)"', line)
        if m:
            found.append(m.group(1) + line[m.end():])
    return "\n".join(found).rstrip("\n")


def dockerfile_problems(dockerfile, cargo_toml, dockerignore):
    """(problems, ARG VERSION default): what hadolint does not check, the
    hardening this repository promises. Arguments are the files' texts."""
    lines = text_lines(dockerfile)
    problems = []
    from_lines = [line for line in lines if line.startswith("FROM ")]
    if not from_lines:
        return ["no FROM line in the Dockerfile"], ""
    froms = "\n".join((re.split(r"[ \t]+", line.strip(" \t")) + [""])[1] for line in from_lines).rstrip("\n")
    images = froms.split("\n")
    if len(images) < 2:
        problems.append("not a multi-stage build")
    for img in images:
        if "@sha256:" in img:
            pass
        elif img.endswith((":latest", ":")):
            problems.append(f"base image {img} is not pinned to an exact tag")
        elif ":" not in img:
            problems.append(f"base image {img} has no tag")

    def has(pattern, whole_line=False):
        return any((re.fullmatch if whole_line else re.search)(pattern, line) for line in lines)

    if not has(r"FROM rust:1.95.0-slim-bookworm AS build", whole_line=True):
        problems.append("builder must be rust:1.95.0-slim-bookworm")
    if not has(r"FROM gcr.io/distroless/cc-debian12:nonroot", whole_line=True):
        problems.append("final image must be gcr.io/distroless/cc-debian12:nonroot")
    if not has(r"cargo build --release --locked"):
        problems.append("no release build (cargo build --release --locked)")
    users = [line for line in lines if line.startswith("USER ")]
    if (users[-1] if users else "") != "USER 65532:65532":
        problems.append("last USER must be the numeric 65532:65532")
    if not has(r"^ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/"):
        problems.append("TALKOVER_STATE_FILE must be on the volume")
    if not has(r'^VOLUME \["/var/lib/talkover-exporter"\]'):
        problems.append("VOLUME /var/lib/talkover-exporter missing")
    for label in ("version", "source", "licenses", "title", "description"):
        if not has(rf"org.opencontainers.image.{label}="):
            problems.append(f"OCI label org.opencontainers.image.{label} missing")
    want_version = cargo_version(cargo_toml)
    have_version = "\n".join(line[len("ARG VERSION="):] for line in lines if line.startswith("ARG VERSION=")).rstrip("\n")
    if not want_version or have_version != want_version:
        problems.append(f"ARG VERSION default ({have_version}) must equal the Cargo.toml version ({want_version})")
    for pattern in ("target", ".git"):
        if not any(re.fullmatch(rf"(?:{pattern}/?|\*)", line) for line in text_lines(dockerignore)):
            problems.append(f".dockerignore does not exclude {pattern}")
    return problems, have_version


def check_dockerfile_policy(report):
    problems, version = dockerfile_problems(read_raw("Dockerfile"), read_raw("Cargo.toml"), read_raw(".dockerignore"))
    for p in problems:
        report.fail(p)
    if problems:
        return 1
    report.say(f"ok: multi-stage, pinned bases, release build, USER 65532, OCI labels, version {version} = Cargo.toml")
    return 0


# -- kustomize, the subset used here ----------------------------------------
def kustomizations(k8s=None):
    return sorted((k8s or K8S).rglob("kustomization.yaml"))


def render(kdir):
    """Render a kustomization the way kustomize does, for the features the
    deploy/kubernetes files use (resources, $patch: delete, images). Anything
    else is refused by check_kustomizations, so this cannot silently differ;
    k8s-consistency also compares it with `kubectl kustomize` when available."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text(encoding="utf-8"))
    docs = []
    for r in k.get("resources") or []:
        p = kdir / r
        docs.extend(render(p) if p.is_dir() else load_docs(p))
    for patch in k.get("patches") or []:
        text = patch["patch"] if "patch" in patch else (kdir / patch["path"]).read_text(encoding="utf-8")
        pdoc = yaml.safe_load(text)
        if pdoc.get("$patch") != "delete":
            raise SystemExit(f"{rel(kdir)}: only '$patch: delete' patches are supported by this check")
        target = (pdoc.get("apiVersion"), pdoc.get("kind"), pdoc["metadata"]["name"])
        before = len(docs)
        docs = [d for d in docs if (d.get("apiVersion"), d.get("kind"), d["metadata"]["name"]) != target]
        if len(docs) == before:
            raise SystemExit(f"{rel(kdir)}: delete patch matches nothing: {target}")
    for img in k.get("images") or []:
        for d in docs:
            for c in pod_containers(d):
                name = c["image"].split("@")[0]
                if ":" in name.rsplit("/", 1)[-1]:
                    name = name.rsplit(":", 1)[0]
                if name == img["name"]:
                    new = img.get("newName", name)
                    if "digest" in img:
                        c["image"] = f"{new}@{img['digest']}"
                    else:
                        c["image"] = f"{new}:{img['newTag']}" if "newTag" in img else new
    seen = set()
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"), d["metadata"]["name"])
        if key in seen:
            raise SystemExit(f"{rel(kdir)}: resource listed twice: {key}")
        seen.add(key)
    return docs


def pod_spec(doc):
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return None


def pod_containers(doc):
    spec = pod_spec(doc)
    if not spec:
        return []
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


# -- Kubernetes checks --------------------------------------------------------
def check_kustomizations(report, k8s=None):
    found = kustomizations(k8s)
    if not found:
        report.fail("no kustomization.yaml under deploy/kubernetes")
    for kfile in found:
        kdir = kfile.parent
        k = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
        unknown = set(k) - KUSTOMIZATION_KEYS
        if unknown:
            report.fail(f"{rel(kfile)}: fields {sorted(unknown)} are not understood by this check; extend deploy/checks.py")
        referenced = set()
        for r in k.get("resources") or []:
            if "://" in r or r.startswith("github.com/"):
                report.fail(f"{rel(kfile)}: remote resource {r} (must work offline)")
                continue
            p = (kdir / r).resolve()
            if not p.exists():
                report.fail(f"{rel(kfile)}: resource {r} does not exist")
            elif p.is_dir() and not (p / "kustomization.yaml").is_file():
                report.fail(f"{rel(kfile)}: resource directory {r} has no kustomization.yaml")
            elif p.is_file() and p.suffix not in (".yaml", ".yml"):
                report.fail(f"{rel(kfile)}: resource {r} is not a YAML file")
            referenced.add(p)
        for patch in k.get("patches") or []:
            if "path" in patch:
                p = (kdir / patch["path"]).resolve()
                if not p.is_file():
                    report.fail(f"{rel(kfile)}: patch {patch['path']} does not exist")
                referenced.add(p)
            elif "patch" not in patch:
                report.fail(f"{rel(kfile)}: patch without path or patch")
        # Every manifest in the directory must be used: a forgotten file is
        # usually a resource someone meant to deploy.
        for f in sorted(kdir.iterdir()):
            if f.suffix in (".yaml", ".yml") and f.name != "kustomization.yaml" and f.resolve() not in referenced:
                report.fail(f"{rel(f)} is not listed in {rel(kfile)}")
        report.say(f"{rel(kfile)}: {len(k.get('resources') or [])} resources, {len(k.get('patches') or [])} patches")
    return report.finish(f"{len(found)} kustomizations list only existing files")


def split_builtin(report, outdir, k8s=None):
    """Write every rendered built-in object to its own file for
    kubernetes-validate; 1 when a custom resource has no check."""
    out = pathlib.Path(outdir)
    n = 0
    for kfile in kustomizations(k8s):
        variant = kfile.parent.name
        for d in render(kfile.parent):
            if is_crd(d):
                if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS:
                    report.fail(f"{variant}: custom resource {d.get('apiVersion')} {d.get('kind')} has no check")
                continue
            kind, name = ident(d)
            (out / f"{variant}--{kind}--{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
            n += 1
    if report.problems:
        return 1
    report.say(f"{n} built-in objects rendered from {len(kustomizations(k8s))} kustomizations")
    return 0


def validate_builtin(report, objdir, versions=K8S_VERSIONS):
    """kubernetes-validate --strict on the files of objdir, per version; it
    only warns when it has no schema, which is a failure here."""
    objdir = str(objdir)
    files = sorted(str(p) for p in pathlib.Path(objdir).glob("*.yaml")) or [f"{objdir}/*.yaml"]
    status = 0
    for v in versions:
        res = run(["kubernetes-validate", "--strict", "--quiet", "-k", v, *files])
        if res.returncode != 0:
            status = 1
        out = res.stdout.rstrip("\n")
        if out:
            report.write(indent(out.replace(objdir + "/", "") + "\n"))
            status = 1
        if status == 0:
            count = sum(1 for _ in pathlib.Path(objdir).rglob("*.yaml"))
            report.say(f"ok: {count} objects valid against Kubernetes {v} (strict)")
    return status


def check_k8s_schemas(report):
    # Built-in kinds of every rendered variant, with the schemas that
    # kubernetes-validate ships (offline), --strict: unknown fields fail too.
    with tempfile.TemporaryDirectory() as tmp:
        objdir = pathlib.Path(tmp) / "objects"
        objdir.mkdir()
        return split_builtin(report, objdir) or validate_builtin(report, objdir)


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def promtool_check_rules(groups):
    """(ok, output) of `promtool check rules` on a rule file of these groups."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
        yaml.safe_dump({"groups": groups}, tmp, sort_keys=False)
    res = run(["promtool", "check", "rules", tmp.name], stderr=subprocess.PIPE)
    os.unlink(tmp.name)
    return res.returncode == 0, f"{res.stdout}{res.stderr}"


def check_custom_resource(report, where, d):
    """One ServiceMonitor or PrometheusRule; True if it counts as checked."""
    if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS:
        report.fail(f"{where}: unknown custom resource kind {d.get('apiVersion')} {d.get('kind')}")
        return False
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key not in d:
            report.fail(f"{where}: missing {key}")
    meta, spec = d.get("metadata") or {}, d.get("spec")
    if not isinstance(meta, dict) or not meta.get("name"):
        report.fail(f"{where}: metadata.name missing")
    if not isinstance(spec, dict) or not spec:
        report.fail(f"{where}: spec must be a non-empty mapping")
        return False
    if d["kind"] == "ServiceMonitor":
        extra = set(spec) - {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels", "podTargetLabels", "sampleLimit"}
        if extra:
            report.fail(f"{where}: unexpected spec fields {sorted(extra)}")
        if not (spec.get("selector") or {}).get("matchLabels") and not (spec.get("selector") or {}).get("matchExpressions"):
            report.fail(f"{where}: spec.selector selects nothing")
        eps = spec.get("endpoints")
        if not isinstance(eps, list) or not eps:
            report.fail(f"{where}: spec.endpoints must be a non-empty list")
        for ep in eps or []:
            if not (ep.get("port") or ep.get("targetPort")):
                report.fail(f"{where}: endpoint without port")
            if "path" in ep and not str(ep["path"]).startswith("/"):
                report.fail(f"{where}: endpoint path must start with /")
            for dk in ("interval", "scrapeTimeout"):
                if dk in ep and not DURATION.match(str(ep[dk])):
                    report.fail(f"{where}: endpoint {dk} {ep[dk]!r} is not a duration")
        return True
    if set(spec) != {"groups"}:
        report.fail(f"{where}: spec must hold exactly 'groups'")
    groups = spec.get("groups")
    if not isinstance(groups, list) or not groups:
        report.fail(f"{where}: spec.groups must be a non-empty list")
        return True
    nrules = 0
    for g in groups:
        if not isinstance(g, dict) or not g.get("name") or not isinstance(g.get("rules"), list):
            report.fail(f"{where}: group without name or rules: {str(g)[:60]}")
            continue
        for r in g["rules"]:
            nrules += 1
            if ("record" in r) == ("alert" in r) or not r.get("expr"):
                report.fail(f"{where}: group {g['name']}: rule needs exactly one of record/alert, and expr")
    ok, output = promtool_check_rules(groups)
    if not ok:
        report.fail(f"{where}: promtool check rules failed on spec.groups:\n{output}")
    else:
        report.say(f"{where}: {len(groups)} groups, {nrules} rules, promtool check rules ok")
    return True


def check_k8s_crds(report, k8s=None):
    checked = 0
    for kfile in kustomizations(k8s):
        variant = kfile.parent.name
        for d in render(kfile.parent):
            if is_crd(d):
                where = f"{variant}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
                checked += check_custom_resource(report, where, d)
    if checked == 0:
        report.fail("no ServiceMonitor/PrometheusRule found")
    return report.finish(f"{checked} custom resources (in all variants) are well-formed")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


SOCKET = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$")


def check_variant(report, variant, docs):
    """References, security context, probes, shards and scraping of one
    rendered variant; False if it has not exactly one workload to check."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def names(kind):
        return {d["metadata"]["name"]: d for d in by_kind.get(kind, [])}

    secrets, configmaps, pvcs, services = names("Secret"), names("ConfigMap"), names("PersistentVolumeClaim"), names("Service")
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    if len(workloads) != 1:
        report.fail(f"{variant}: expected exactly one Deployment or StatefulSet, found {len(workloads)}")
        return False
    w = workloads[0]
    where = f"{variant}: {w['kind']}/{w['metadata']['name']}"
    spec, pod = w["spec"], pod_spec(w)
    pod_labels = w["spec"]["template"]["metadata"].get("labels") or {}
    if not labels_match(spec["selector"].get("matchLabels"), pod_labels):
        report.fail(f"{where}: selector does not match the pod template labels")
    # Security context.
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        report.fail(f"{where}: pod securityContext needs runAsNonRoot: true, runAsUser: 65532")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        report.fail(f"{where}: pod seccompProfile must be RuntimeDefault")
    templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in pod["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            report.fail(f"{cw}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            report.fail(f"{cw}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            report.fail(f"{cw}: capabilities must drop ALL")
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", psc.get("runAsUser")) != 65532:
            report.fail(f"{cw}: must run as non-root user 65532")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not all(k in (res.get(part) or {}) for k in ("cpu", "memory")) and not (part == "limits" and "memory" in (res.get(part) or {})):
                report.fail(f"{cw}: resources.{part} incomplete")
        ports = {p.get("name"): p for p in c.get("ports") or []}
        if "http-metrics" not in ports or ports["http-metrics"].get("containerPort") != 9868:
            report.fail(f"{cw}: needs port http-metrics = 9868")
        for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
            got = ((c.get(probe) or {}).get("httpGet") or {})
            if got.get("path") != path or got.get("port") not in ("http-metrics", 9868):
                report.fail(f"{cw}: {probe} must GET {path} on http-metrics")
        args = c.get("args") or []
        env = {e["name"]: e for e in c.get("env") or []}
        listen = [a.split("=", 1)[1] for a in args if a.startswith("--web.listen-address=")]
        if not listen or not SOCKET.match(listen[0]):
            report.fail(f"{cw}: --web.listen-address=HOST:PORT (a socket address like 0.0.0.0:9868) required, got {listen}")
        token_args = [a.split("=", 1)[1] for a in args if a.startswith("--talkover.token-file=")]
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        if token_args != ["/var/run/secrets/talkover/token"]:
            report.fail(f"{cw}: --talkover.token-file=/var/run/secrets/talkover/token required")
        if "TALKOVER_TOKEN" in env:
            report.fail(f"{cw}: the token must come from the file, not TALKOVER_TOKEN")
        tm = mounts.get("/var/run/secrets/talkover")
        tv = volumes.get(tm["name"]) if tm else None
        if not tv or "secret" not in tv:
            report.fail(f"{cw}: /var/run/secrets/talkover must be a Secret volume")
        else:
            sname = tv["secret"]["secretName"]
            items = {i["key"]: i["path"] for i in tv["secret"].get("items") or []}
            if sname not in secrets:
                report.fail(f"{cw}: Secret {sname} is not part of {variant}")
            elif "token" not in (secrets[sname].get("stringData") or {}) and "token" not in (secrets[sname].get("data") or {}):
                report.fail(f"{cw}: Secret {sname} has no key token")
            if items and items.get("token") != "token":
                report.fail(f"{cw}: Secret key token must be mounted as file token")
        sm = mounts.get("/var/lib/talkover-exporter")
        if not sm:
            report.fail(f"{cw}: no volume at /var/lib/talkover-exporter (state file)")
        elif sm["name"] in volumes:
            claim = (volumes[sm["name"]].get("persistentVolumeClaim") or {}).get("claimName")
            if claim not in pvcs:
                report.fail(f"{cw}: state volume is not a PersistentVolumeClaim of {variant}")
        elif sm["name"] not in templates:
            report.fail(f"{cw}: state volume {sm['name']} is neither a volume nor a volumeClaimTemplate")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes and m["name"] not in templates:
                report.fail(f"{cw}: volumeMount {m['name']} has no volume")
        for e in env.values():
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and (ref["name"] not in configmaps or ref["key"] not in (configmaps[ref["name"]].get("data") or {})):
                report.fail(f"{cw}: env {e['name']} refers to missing ConfigMap key {ref['name']}/{ref['key']}")
        for ef in c.get("envFrom") or []:
            if "configMapRef" in ef and ef["configMapRef"]["name"] not in configmaps:
                report.fail(f"{cw}: envFrom ConfigMap {ef['configMapRef']['name']} missing")
        if w["kind"] == "Deployment":
            if spec.get("replicas") != 1 or (spec.get("strategy") or {}).get("type") != "Recreate":
                report.fail(f"{where}: single-writer state: replicas 1 and strategy Recreate")
            if "TALKOVER_TARGETS" not in env:
                report.fail(f"{cw}: TALKOVER_TARGETS missing")
        else:
            idx = (((env.get("TALKOVER_SHARD_INDEX") or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if idx != "metadata.labels['apps.kubernetes.io/pod-index']":
                report.fail(f"{cw}: TALKOVER_SHARD_INDEX must come from the pod-index label, got {idx}")
            count = (env.get("TALKOVER_SHARD_COUNT") or {}).get("value")
            if count != str(spec.get("replicas")):
                report.fail(f"{cw}: TALKOVER_SHARD_COUNT ({count}) != replicas ({spec.get('replicas')})")
            if (env.get("TALKOVER_DISCOVER") or {}).get("value") != "campaigns,agents":
                report.fail(f"{cw}: TALKOVER_DISCOVER=campaigns,agents expected")
            if not templates:
                report.fail(f"{where}: volumeClaimTemplates missing")
            svc = services.get(spec.get("serviceName"))
            if not svc or svc["spec"].get("clusterIP") != "None":
                report.fail(f"{where}: serviceName must name a headless Service of {variant}")
    # Services select the pods; the ServiceMonitor selects the Services.
    for s in services.values():
        if not labels_match(s["spec"].get("selector"), pod_labels):
            report.fail(f"{variant}: Service {s['metadata']['name']} selects no pod")
    monitors = by_kind.get("ServiceMonitor", [])
    if len(monitors) != 1:
        report.fail(f"{variant}: expected one ServiceMonitor, found {len(monitors)}")
    for m in monitors:
        sel = m["spec"]["selector"].get("matchLabels") or {}
        chosen = [s for s in services.values() if labels_match(sel, s["metadata"].get("labels") or {})]
        if len(chosen) != 1:
            report.fail(f"{variant}: ServiceMonitor must select exactly one Service (else pods are scraped twice), selects {len(chosen)}")
        for s in chosen:
            pnames = {p.get("name") for p in s["spec"]["ports"]}
            for ep in m["spec"]["endpoints"]:
                if ep.get("port") not in pnames:
                    report.fail(f"{variant}: ServiceMonitor port {ep.get('port')} not on Service {s['metadata']['name']}")
    if not by_kind.get("PrometheusRule"):
        report.fail(f"{variant}: no PrometheusRule")
    return True


def same_rendering(docs, kustomize_output):
    """Whether `kubectl kustomize` output holds the same objects as docs."""
    real = sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(kustomize_output) if d)
    mine = sorted(json.dumps(d, sort_keys=True) for d in docs)
    return real == mine


def check_k8s_consistency(report, k8s=None, kubectl=None):
    kubectl = kubectl if kubectl is not None else shutil.which("kubectl")
    for kfile in kustomizations(k8s):
        variant = kfile.parent.name
        docs = render(kfile.parent)
        if not check_variant(report, variant, docs):
            continue
        # Cross-check the renderer with the real kustomize.
        if kubectl:
            res = run([kubectl, "kustomize", str(kfile.parent)], stderr=subprocess.PIPE)
            if res.returncode != 0:
                report.fail(f"{variant}: kubectl kustomize failed: {res.stderr.strip()}")
            elif not same_rendering(docs, res.stdout):
                report.fail(f"{variant}: `kubectl kustomize` output differs from this check's rendering")
        summary = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        report.say(f"{variant}: {summary}")
    report.say("kubectl kustomize cross-check: " + ("done" if kubectl else "skipped (kubectl not on PATH)"))
    return report.finish("references, security context, probes, shards and scraping are consistent")


def check_prometheusrule_drift(report):
    res = run([sys.executable, "deploy/kubernetes/generate-prometheusrule.py", "--check"], stderr=None)
    report.write(indent(res.stdout))
    return res.returncode


# -- compose -------------------------------------------------------------------
def compose_volumes(svc):
    """(source, target, is_bind) of every volume of a compose service."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                out.append((None, parts[0], False))
            else:
                src, dst = parts[0], parts[1]
                out.append((src, dst, src.startswith((".", "/", "~"))))
        else:
            out.append((v.get("source"), v.get("target"), v.get("type") == "bind"))
    return out


def check_compose_files(report, compose=None, root=None):
    compose, root = compose or COMPOSE, root or ROOT
    cfile = compose / "docker-compose.yml"
    comp = yaml.safe_load(cfile.read_text(encoding="utf-8"))
    services = comp.get("services") or {}
    named_volumes = set(comp.get("volumes") or {})
    mounts = {}  # (service, container path) -> host path
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            cdir = (compose / ctx).resolve()
            dockerfile = cdir / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            if not cdir.is_dir():
                report.fail(f"{name}: build context {ctx} does not exist")
            elif not dockerfile.is_file():
                report.fail(f"{name}: Dockerfile {rel(dockerfile)} does not exist")
            else:
                report.say(f"{name}: build context {rel(cdir) or '.'} with {rel(dockerfile)}")
        else:
            image = svc.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest" or "@" in image and not tag:
                report.fail(f"{name}: image {image!r} is not pinned to a tag")
            else:
                report.say(f"{name}: image {image}")
        for src, dst, bind in compose_volumes(svc):
            if bind:
                host = (compose / os.path.expanduser(src)).resolve()
                if not host.exists():
                    report.fail(f"{name}: bind mount source {src} does not exist ({rel(host)})")
                mounts[(name, dst)] = host
            elif src and src not in named_volumes:
                report.fail(f"{name}: volume {src} is not declared under volumes:")
    rules = (root / "dashboards" / "prometheus" / "rules.yml").resolve()
    dashboard = (root / "dashboards" / "talkover-webhooks.json").resolve()

    # Prometheus: the config the container reads is ./prometheus.yml, and each
    # rule file it names (relative to the config, as Prometheus resolves it)
    # is a bind mount of the repo's own rules file.
    prom = services.get("prometheus") or {}
    cfg_args = [a.split("=", 1)[1] for a in prom.get("command") or [] if str(a).startswith("--config.file=")]
    cfg_in = cfg_args[0] if cfg_args else "/etc/prometheus/prometheus.yml"
    if mounts.get(("prometheus", cfg_in)) != (compose / "prometheus.yml").resolve():
        report.fail(f"prometheus: --config.file {cfg_in} is not the bind mount of deploy/compose/prometheus.yml")
    pcfg = yaml.safe_load((compose / "prometheus.yml").read_text(encoding="utf-8"))
    rule_files = pcfg.get("rule_files") or []
    if not rule_files:
        report.fail("prometheus.yml loads no rule_files")
    for rf in rule_files:
        in_container = os.path.normpath(os.path.join(os.path.dirname(cfg_in), rf))
        if mounts.get(("prometheus", in_container)) != rules:
            report.fail(f"prometheus.yml rule_files {rf} is {in_container} in the container, which is not a mount of dashboards/prometheus/rules.yml")
        if (compose / rf).resolve() != rules:
            report.fail(f"prometheus.yml rule_files {rf} does not resolve to dashboards/prometheus/rules.yml for promtool")
    jobs = {j["job_name"]: j for j in pcfg.get("scrape_configs") or []}
    tk = jobs.get("talkover") or {}
    targets = [t for sc in tk.get("static_configs") or [] for t in sc.get("targets") or []]
    if tk.get("scrape_interval") != "5s" or not any(t.split(":")[0] in services for t in targets):
        report.fail("prometheus.yml: job talkover must scrape a compose service every 5s")
    am = [t for a in (pcfg.get("alerting") or {}).get("alertmanagers") or [] for sc in a.get("static_configs") or [] for t in sc.get("targets") or []]
    if not am or any(t.split(":")[0] not in services for t in am):
        report.fail(f"prometheus.yml: alertmanagers {am} must point to compose services")

    ex = services.get("talkover-exporter") or {}
    cmd = ex.get("command") or []
    if "--demo" not in cmd or "0.0.0.0:9868" not in " ".join(map(str, cmd)).replace("=", " ").split():
        report.fail("talkover-exporter: command must be --demo --web.listen-address 0.0.0.0:9868")

    # Grafana: datasource with fixed uid, default; dashboard provider path is
    # the directory the repo's dashboard is mounted into.
    ds_files = sorted((compose / "provisioning" / "datasources").glob("*.yml"))
    dss = [d for f in ds_files for d in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("datasources") or []]
    proms = [d for d in dss if d.get("type") == "prometheus"]
    if len(proms) != 1 or not proms[0].get("uid") or proms[0].get("isDefault") is not True:
        report.fail("grafana: exactly one Prometheus datasource, with a fixed uid and isDefault: true")
    elif not any(f"//{s}:" in str(proms[0].get("url")) for s in services):
        report.fail(f"grafana: datasource url {proms[0].get('url')} is not a compose service")
    prov_files = sorted((compose / "provisioning" / "dashboards").glob("*.yml"))
    paths = [(p.get("options") or {}).get("path") for f in prov_files for p in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("providers") or []]
    dash_targets = [dst for (svc, dst), host in mounts.items() if svc == "grafana" and host == dashboard]
    if not dash_targets:
        report.fail("grafana: dashboards/talkover-webhooks.json is not bind-mounted")
    elif not any(os.path.dirname(t) == p or t == p for t in dash_targets for p in paths):
        report.fail(f"grafana: no dashboard provider reads {dash_targets} (provider paths {paths})")
    for sub in ("datasources", "dashboards"):
        host = (compose / "provisioning" / sub).resolve()
        if mounts.get(("grafana", f"/etc/grafana/provisioning/{sub}")) != host:
            report.fail(f"grafana: provisioning/{sub} is not mounted at /etc/grafana/provisioning/{sub}")
    dash = json.loads(dashboard.read_text(encoding="utf-8"))
    var = [v for v in dash.get("templating", {}).get("list", []) if v.get("name") == "datasource"]
    if not var or var[0].get("type") != "datasource" or var[0].get("query") != "prometheus":
        report.fail("dashboard: expected a ${datasource} variable of type datasource for prometheus")
    if mounts.get(("alertmanager", "/etc/alertmanager/alertmanager.yml")) != (compose / "alertmanager.yml").resolve():
        report.fail("alertmanager: deploy/compose/alertmanager.yml is not mounted as its config")
    return report.finish(f"{len(services)} services: build context, bind mounts, pinned images and wiring are right")


# -- tools' own config checks, and the unit tests ------------------------------
def check_promtool_config(report):
    # rule_files in prometheus.yml is relative to the config file and mirrors the
    # repo layout, so promtool resolves it to dashboards/prometheus/rules.yml
    # here, exactly as Prometheus does in the container (compose-files checks
    # that correspondence). promtool also checks the rules it loads.
    res = run(["promtool", "check", "config", "deploy/compose/prometheus.yml"])
    report.write(indent(res.stdout, drop_blank=True))
    return res.returncode


def check_amtool_config(report):
    res = run(["amtool", "check-config", "deploy/compose/alertmanager.yml"])
    report.write(indent(res.stdout, drop_blank=True))
    return res.returncode


def check_selftest(report):
    # The checks' own unit tests (deploy/test_checks.py): each check can fail.
    res = run([sys.executable, "-m", "unittest", "discover", "-s", "deploy", "-p", "test_*.py"])
    out = res.stdout.rstrip("\n")
    if res.returncode != 0:
        report.write(indent(out + "\n"))
        return 1
    report.say("ok: " + "\n".join(line for line in out.split("\n") if line.startswith("Ran ")))
    return 0


CHECKS = {
    "checks-selftest": check_selftest,
    "hadolint": check_hadolint,
    "dockerfile-policy": check_dockerfile_policy,
    "kustomizations": check_kustomizations,
    "k8s-schemas": check_k8s_schemas,
    "k8s-crds": check_k8s_crds,
    "k8s-consistency": check_k8s_consistency,
    "prometheusrule-drift": check_prometheusrule_drift,
    "compose-files": check_compose_files,
    "promtool-config": check_promtool_config,
    "amtool-config": check_amtool_config,
}


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    os.chdir(ROOT)
    if args[:1] == ["--list"]:
        print("\n".join(CHECKS))
        return 0
    if args[:1] == ["--run-one"]:
        if len(args) < 2 or args[1] not in CHECKS:
            print(f"usage: {sys.argv[0]} --run-one NAME (see --list)", file=sys.stderr)
            return 2
        return CHECKS[args[1]](Report())
    passed, failed = [], []
    for name in args or list(CHECKS):
        if name not in CHECKS:
            sys.stdout.flush()
            print(f"unknown check: {name} (see --list)", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        # Its own process: a check that crashes or exits is just a failed check.
        if subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), "--run-one", name]).returncode == 0:
            passed.append(name)
        else:
            print("  -> FAILED")
            failed.append(name)
    print()
    print(f"== summary: {len(passed)} passed, {len(failed)} failed")
    for name in passed:
        print(f"  PASS  {name}")
    for name in failed:
        print(f"  FAIL  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
