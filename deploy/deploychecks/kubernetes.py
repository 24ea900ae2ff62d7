"""The Kubernetes manifests: kustomize rendering, schemas, custom resources, the variants' consistency, the PrometheusRule's drift."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from deploychecks import common
from deploychecks.common import CRD_KINDS, K8S, K8S_VERSIONS, KUSTOMIZATION_KEYS, ident, indent, is_crd, load_docs, rel
from deploychecks.common import yaml


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
        res = common.run(["kubernetes-validate", "--strict", "--quiet", "-k", v, *files])
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
    res = common.run(["promtool", "check", "rules", tmp.name], stderr=subprocess.PIPE)
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
            res = common.run([kubectl, "kustomize", str(kfile.parent)], stderr=subprocess.PIPE)
            if res.returncode != 0:
                report.fail(f"{variant}: kubectl kustomize failed: {res.stderr.strip()}")
            elif not same_rendering(docs, res.stdout):
                report.fail(f"{variant}: `kubectl kustomize` output differs from this check's rendering")
        summary = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        report.say(f"{variant}: {summary}")
    report.say("kubectl kustomize cross-check: " + ("done" if kubectl else "skipped (kubectl not on PATH)"))
    return report.finish("references, security context, probes, shards and scraping are consistent")


def check_prometheusrule_drift(report):
    res = common.run([sys.executable, "deploy/kubernetes/generate-prometheusrule.py", "--check"], stderr=None)
    report.write(indent(res.stdout))
    return res.returncode


# -- compose -------------------------------------------------------------------
