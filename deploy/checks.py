"""The deployment checks that need a YAML parser: kustomizations rendered
and compared, custom resources, consistency between manifests, the compose
stack. `deploy/check.sh` installs the tools and runs each check as
`python3 deploy/checks.py NAME`; `deploy/test_checks.py` tests the pure
parts (`python3 -m unittest discover -s deploy -p 'test_*.py'`).
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(os.environ.get("ROOT") or pathlib.Path(__file__).resolve().parent.parent)
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose"
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
errors = []


def err(msg):
    errors.append(msg)
    print(f"  FAIL: {msg}")


def finish(ok_msg):
    if errors:
        print(f"  {len(errors)} problem(s)")
        sys.exit(1)
    print(f"  ok: {ok_msg}")


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


# -- kustomize, the subset used here ----------------------------------------
def kustomizations():
    return sorted(K8S.rglob("kustomization.yaml"))


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


# -- checks ------------------------------------------------------------------
def check_kustomizations():
    found = kustomizations()
    if not found:
        err("no kustomization.yaml under deploy/kubernetes")
    for kfile in found:
        kdir = kfile.parent
        k = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
        unknown = set(k) - KUSTOMIZATION_KEYS
        if unknown:
            err(f"{rel(kfile)}: fields {sorted(unknown)} are not understood by this check; extend deploy/check.sh")
        referenced = set()
        for r in k.get("resources") or []:
            if "://" in r or r.startswith("github.com/"):
                err(f"{rel(kfile)}: remote resource {r} (must work offline)")
                continue
            p = (kdir / r).resolve()
            if not p.exists():
                err(f"{rel(kfile)}: resource {r} does not exist")
            elif p.is_dir() and not (p / "kustomization.yaml").is_file():
                err(f"{rel(kfile)}: resource directory {r} has no kustomization.yaml")
            elif p.is_file() and p.suffix not in (".yaml", ".yml"):
                err(f"{rel(kfile)}: resource {r} is not a YAML file")
            referenced.add(p)
        for patch in k.get("patches") or []:
            if "path" in patch:
                p = (kdir / patch["path"]).resolve()
                if not p.is_file():
                    err(f"{rel(kfile)}: patch {patch['path']} does not exist")
                referenced.add(p)
            elif "patch" not in patch:
                err(f"{rel(kfile)}: patch without path or patch")
        # Every manifest in the directory must be used: a forgotten file is
        # usually a resource someone meant to deploy.
        for f in sorted(kdir.iterdir()):
            if f.suffix in (".yaml", ".yml") and f.name != "kustomization.yaml" and f.resolve() not in referenced:
                err(f"{rel(f)} is not listed in {rel(kfile)}")
        print(f"  {rel(kfile)}: {len(k.get('resources') or [])} resources, {len(k.get('patches') or [])} patches")
    finish(f"{len(found)} kustomizations list only existing files")


def split_builtin(outdir):
    """Write every rendered built-in object to its own file for kubernetes-validate."""
    out = pathlib.Path(outdir)
    n = 0
    for kfile in kustomizations():
        variant = kfile.parent.name
        for d in render(kfile.parent):
            if is_crd(d):
                if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS:
                    err(f"{variant}: custom resource {d.get('apiVersion')} {d.get('kind')} has no check")
                continue
            kind, name = ident(d)
            (out / f"{variant}--{kind}--{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
            n += 1
    if errors:
        sys.exit(1)
    print(f"  {n} built-in objects rendered from {len(kustomizations())} kustomizations")


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def check_crds():
    checked = 0
    for kfile in kustomizations():
        variant = kfile.parent.name
        for d in render(kfile.parent):
            if not is_crd(d):
                continue
            where = f"{variant}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS:
                err(f"{where}: unknown custom resource kind {d.get('apiVersion')} {d.get('kind')}")
                continue
            for key in ("apiVersion", "kind", "metadata", "spec"):
                if key not in d:
                    err(f"{where}: missing {key}")
            meta, spec = d.get("metadata") or {}, d.get("spec")
            if not isinstance(meta, dict) or not meta.get("name"):
                err(f"{where}: metadata.name missing")
            if not isinstance(spec, dict) or not spec:
                err(f"{where}: spec must be a non-empty mapping")
                continue
            checked += 1
            if d["kind"] == "ServiceMonitor":
                extra = set(spec) - {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels", "podTargetLabels", "sampleLimit"}
                if extra:
                    err(f"{where}: unexpected spec fields {sorted(extra)}")
                if not (spec.get("selector") or {}).get("matchLabels") and not (spec.get("selector") or {}).get("matchExpressions"):
                    err(f"{where}: spec.selector selects nothing")
                eps = spec.get("endpoints")
                if not isinstance(eps, list) or not eps:
                    err(f"{where}: spec.endpoints must be a non-empty list")
                for ep in eps or []:
                    if not (ep.get("port") or ep.get("targetPort")):
                        err(f"{where}: endpoint without port")
                    if "path" in ep and not str(ep["path"]).startswith("/"):
                        err(f"{where}: endpoint path must start with /")
                    for dk in ("interval", "scrapeTimeout"):
                        if dk in ep and not DURATION.match(str(ep[dk])):
                            err(f"{where}: endpoint {dk} {ep[dk]!r} is not a duration")
            else:
                if set(spec) != {"groups"}:
                    err(f"{where}: spec must hold exactly 'groups'")
                groups = spec.get("groups")
                if not isinstance(groups, list) or not groups:
                    err(f"{where}: spec.groups must be a non-empty list")
                    continue
                nrules = 0
                for g in groups:
                    if not isinstance(g, dict) or not g.get("name") or not isinstance(g.get("rules"), list):
                        err(f"{where}: group without name or rules: {str(g)[:60]}")
                        continue
                    for r in g["rules"]:
                        nrules += 1
                        if ("record" in r) == ("alert" in r) or not r.get("expr"):
                            err(f"{where}: group {g['name']}: rule needs exactly one of record/alert, and expr")
                with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as tmp:
                    yaml.safe_dump({"groups": groups}, tmp, sort_keys=False)
                res = subprocess.run(["promtool", "check", "rules", tmp.name], capture_output=True, text=True)
                os.unlink(tmp.name)
                if res.returncode != 0:
                    err(f"{where}: promtool check rules failed on spec.groups:\n{res.stdout}{res.stderr}")
                else:
                    print(f"  {where}: {len(groups)} groups, {nrules} rules, promtool check rules ok")
    if checked == 0:
        err("no ServiceMonitor/PrometheusRule found")
    finish(f"{checked} custom resources (in all variants) are well-formed")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


SOCKET = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$")


def check_consistency():
    kubectl = shutil_which("kubectl")
    for kfile in kustomizations():
        variant = kfile.parent.name
        docs = render(kfile.parent)
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        names = lambda kind: {d["metadata"]["name"]: d for d in by_kind.get(kind, [])}
        secrets, configmaps, pvcs, services = names("Secret"), names("ConfigMap"), names("PersistentVolumeClaim"), names("Service")
        workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
        if len(workloads) != 1:
            err(f"{variant}: expected exactly one Deployment or StatefulSet, found {len(workloads)}")
            continue
        w = workloads[0]
        where = f"{variant}: {w['kind']}/{w['metadata']['name']}"
        spec, pod = w["spec"], pod_spec(w)
        pod_labels = w["spec"]["template"]["metadata"].get("labels") or {}
        if not labels_match(spec["selector"].get("matchLabels"), pod_labels):
            err(f"{where}: selector does not match the pod template labels")
        # Security context.
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
            err(f"{where}: pod securityContext needs runAsNonRoot: true, runAsUser: 65532")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            err(f"{where}: pod seccompProfile must be RuntimeDefault")
        templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                err(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(f"{cw}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                err(f"{cw}: capabilities must drop ALL")
            if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", psc.get("runAsUser")) != 65532:
                err(f"{cw}: must run as non-root user 65532")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not all(k in (res.get(part) or {}) for k in ("cpu", "memory")) and not (part == "limits" and "memory" in (res.get(part) or {})):
                    err(f"{cw}: resources.{part} incomplete")
            ports = {p.get("name"): p for p in c.get("ports") or []}
            if "http-metrics" not in ports or ports["http-metrics"].get("containerPort") != 9868:
                err(f"{cw}: needs port http-metrics = 9868")
            for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
                got = ((c.get(probe) or {}).get("httpGet") or {})
                if got.get("path") != path or got.get("port") not in ("http-metrics", 9868):
                    err(f"{cw}: {probe} must GET {path} on http-metrics")
            args = c.get("args") or []
            env = {e["name"]: e for e in c.get("env") or []}
            listen = [a.split("=", 1)[1] for a in args if a.startswith("--web.listen-address=")]
            if not listen or not SOCKET.match(listen[0]):
                err(f"{cw}: --web.listen-address=HOST:PORT (a socket address like 0.0.0.0:9868) required, got {listen}")
            token_args = [a.split("=", 1)[1] for a in args if a.startswith("--talkover.token-file=")]
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            if token_args != ["/var/run/secrets/talkover/token"]:
                err(f"{cw}: --talkover.token-file=/var/run/secrets/talkover/token required")
            if "TALKOVER_TOKEN" in env:
                err(f"{cw}: the token must come from the file, not TALKOVER_TOKEN")
            tm = mounts.get("/var/run/secrets/talkover")
            tv = volumes.get(tm["name"]) if tm else None
            if not tv or "secret" not in tv:
                err(f"{cw}: /var/run/secrets/talkover must be a Secret volume")
            else:
                sname = tv["secret"]["secretName"]
                items = {i["key"]: i["path"] for i in tv["secret"].get("items") or []}
                if sname not in secrets:
                    err(f"{cw}: Secret {sname} is not part of {variant}")
                elif "token" not in (secrets[sname].get("stringData") or {}) and "token" not in (secrets[sname].get("data") or {}):
                    err(f"{cw}: Secret {sname} has no key token")
                if items and items.get("token") != "token":
                    err(f"{cw}: Secret key token must be mounted as file token")
            sm = mounts.get("/var/lib/talkover-exporter")
            if not sm:
                err(f"{cw}: no volume at /var/lib/talkover-exporter (state file)")
            elif sm["name"] in volumes:
                claim = (volumes[sm["name"]].get("persistentVolumeClaim") or {}).get("claimName")
                if claim not in pvcs:
                    err(f"{cw}: state volume is not a PersistentVolumeClaim of {variant}")
            elif sm["name"] not in templates:
                err(f"{cw}: state volume {sm['name']} is neither a volume nor a volumeClaimTemplate")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and m["name"] not in templates:
                    err(f"{cw}: volumeMount {m['name']} has no volume")
            for e in env.values():
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and (ref["name"] not in configmaps or ref["key"] not in (configmaps[ref["name"]].get("data") or {})):
                    err(f"{cw}: env {e['name']} refers to missing ConfigMap key {ref['name']}/{ref['key']}")
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in configmaps:
                    err(f"{cw}: envFrom ConfigMap {ef['configMapRef']['name']} missing")
            if w["kind"] == "Deployment":
                if spec.get("replicas") != 1 or (spec.get("strategy") or {}).get("type") != "Recreate":
                    err(f"{where}: single-writer state: replicas 1 and strategy Recreate")
                if "TALKOVER_TARGETS" not in env:
                    err(f"{cw}: TALKOVER_TARGETS missing")
            else:
                idx = (((env.get("TALKOVER_SHARD_INDEX") or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                if idx != "metadata.labels['apps.kubernetes.io/pod-index']":
                    err(f"{cw}: TALKOVER_SHARD_INDEX must come from the pod-index label, got {idx}")
                count = (env.get("TALKOVER_SHARD_COUNT") or {}).get("value")
                if count != str(spec.get("replicas")):
                    err(f"{cw}: TALKOVER_SHARD_COUNT ({count}) != replicas ({spec.get('replicas')})")
                if (env.get("TALKOVER_DISCOVER") or {}).get("value") != "campaigns,agents":
                    err(f"{cw}: TALKOVER_DISCOVER=campaigns,agents expected")
                if not templates:
                    err(f"{where}: volumeClaimTemplates missing")
                svc = services.get(spec.get("serviceName"))
                if not svc or svc["spec"].get("clusterIP") != "None":
                    err(f"{where}: serviceName must name a headless Service of {variant}")
        # Services select the pods; the ServiceMonitor selects the Services.
        for s in services.values():
            if not labels_match(s["spec"].get("selector"), pod_labels):
                err(f"{variant}: Service {s['metadata']['name']} selects no pod")
        monitors = by_kind.get("ServiceMonitor", [])
        if len(monitors) != 1:
            err(f"{variant}: expected one ServiceMonitor, found {len(monitors)}")
        for m in monitors:
            sel = m["spec"]["selector"].get("matchLabels") or {}
            chosen = [s for s in services.values() if labels_match(sel, s["metadata"].get("labels") or {})]
            if len(chosen) != 1:
                err(f"{variant}: ServiceMonitor must select exactly one Service (else pods are scraped twice), selects {len(chosen)}")
            for s in chosen:
                pnames = {p.get("name") for p in s["spec"]["ports"]}
                for ep in m["spec"]["endpoints"]:
                    if ep.get("port") not in pnames:
                        err(f"{variant}: ServiceMonitor port {ep.get('port')} not on Service {s['metadata']['name']}")
        if not by_kind.get("PrometheusRule"):
            err(f"{variant}: no PrometheusRule")
        # Cross-check the renderer with the real kustomize.
        if kubectl:
            res = subprocess.run([kubectl, "kustomize", str(kfile.parent)], capture_output=True, text=True)
            if res.returncode != 0:
                err(f"{variant}: kubectl kustomize failed: {res.stderr.strip()}")
            else:
                real = sorted((json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(res.stdout) if d))
                mine = sorted(json.dumps(d, sort_keys=True) for d in docs)
                if real != mine:
                    err(f"{variant}: `kubectl kustomize` output differs from this check's rendering")
        summary = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
        print(f"  {variant}: {summary}")
    print("  kubectl kustomize cross-check: " + ("done" if kubectl else "skipped (kubectl not on PATH)"))
    finish("references, security context, probes, shards and scraping are consistent")


def shutil_which(name):
    import shutil
    return shutil.which(name)


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


def check_compose():
    cfile = COMPOSE / "docker-compose.yml"
    comp = yaml.safe_load(cfile.read_text(encoding="utf-8"))
    services = comp.get("services") or {}
    named_volumes = set(comp.get("volumes") or {})
    mounts = {}  # (service, container path) -> host path
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            cdir = (COMPOSE / ctx).resolve()
            dockerfile = cdir / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            if not cdir.is_dir():
                err(f"{name}: build context {ctx} does not exist")
            elif not dockerfile.is_file():
                err(f"{name}: Dockerfile {rel(dockerfile)} does not exist")
            else:
                print(f"  {name}: build context {rel(cdir) or '.'} with {rel(dockerfile)}")
        else:
            image = svc.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest" or "@" in image and not tag:
                err(f"{name}: image {image!r} is not pinned to a tag")
            else:
                print(f"  {name}: image {image}")
        for src, dst, bind in compose_volumes(svc):
            if bind:
                host = (COMPOSE / os.path.expanduser(src)).resolve()
                if not host.exists():
                    err(f"{name}: bind mount source {src} does not exist ({rel(host)})")
                mounts[(name, dst)] = host
            elif src and src not in named_volumes:
                err(f"{name}: volume {src} is not declared under volumes:")
    rules = (ROOT / "dashboards" / "prometheus" / "rules.yml").resolve()
    dashboard = (ROOT / "dashboards" / "talkover-webhooks.json").resolve()

    # Prometheus: the config the container reads is ./prometheus.yml, and each
    # rule file it names (relative to the config, as Prometheus resolves it)
    # is a bind mount of the repo's own rules file.
    prom = services.get("prometheus") or {}
    cfg_args = [a.split("=", 1)[1] for a in prom.get("command") or [] if str(a).startswith("--config.file=")]
    cfg_in = cfg_args[0] if cfg_args else "/etc/prometheus/prometheus.yml"
    if mounts.get(("prometheus", cfg_in)) != (COMPOSE / "prometheus.yml").resolve():
        err(f"prometheus: --config.file {cfg_in} is not the bind mount of deploy/compose/prometheus.yml")
    pcfg = yaml.safe_load((COMPOSE / "prometheus.yml").read_text(encoding="utf-8"))
    rule_files = pcfg.get("rule_files") or []
    if not rule_files:
        err("prometheus.yml loads no rule_files")
    for rf in rule_files:
        in_container = os.path.normpath(os.path.join(os.path.dirname(cfg_in), rf))
        if mounts.get(("prometheus", in_container)) != rules:
            err(f"prometheus.yml rule_files {rf} is {in_container} in the container, which is not a mount of dashboards/prometheus/rules.yml")
        if (COMPOSE / rf).resolve() != rules:
            err(f"prometheus.yml rule_files {rf} does not resolve to dashboards/prometheus/rules.yml for promtool")
    jobs = {j["job_name"]: j for j in pcfg.get("scrape_configs") or []}
    tk = jobs.get("talkover") or {}
    targets = [t for sc in tk.get("static_configs") or [] for t in sc.get("targets") or []]
    if tk.get("scrape_interval") != "5s" or not any(t.split(":")[0] in services for t in targets):
        err("prometheus.yml: job talkover must scrape a compose service every 5s")
    am = [t for a in (pcfg.get("alerting") or {}).get("alertmanagers") or [] for sc in a.get("static_configs") or [] for t in sc.get("targets") or []]
    if not am or any(t.split(":")[0] not in services for t in am):
        err(f"prometheus.yml: alertmanagers {am} must point to compose services")

    ex = services.get("talkover-exporter") or {}
    cmd = ex.get("command") or []
    if "--demo" not in cmd or "0.0.0.0:9868" not in " ".join(map(str, cmd)).replace("=", " ").split():
        err("talkover-exporter: command must be --demo --web.listen-address 0.0.0.0:9868")

    # Grafana: datasource with fixed uid, default; dashboard provider path is
    # the directory the repo's dashboard is mounted into.
    ds_files = sorted((COMPOSE / "provisioning" / "datasources").glob("*.yml"))
    dss = [d for f in ds_files for d in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("datasources") or []]
    proms = [d for d in dss if d.get("type") == "prometheus"]
    if len(proms) != 1 or not proms[0].get("uid") or proms[0].get("isDefault") is not True:
        err("grafana: exactly one Prometheus datasource, with a fixed uid and isDefault: true")
    elif not any(f"//{s}:" in str(proms[0].get("url")) for s in services):
        err(f"grafana: datasource url {proms[0].get('url')} is not a compose service")
    prov_files = sorted((COMPOSE / "provisioning" / "dashboards").glob("*.yml"))
    paths = [(p.get("options") or {}).get("path") for f in prov_files for p in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("providers") or []]
    dash_targets = [dst for (svc, dst), host in mounts.items() if svc == "grafana" and host == dashboard]
    if not dash_targets:
        err("grafana: dashboards/talkover-webhooks.json is not bind-mounted")
    elif not any(os.path.dirname(t) == p or t == p for t in dash_targets for p in paths):
        err(f"grafana: no dashboard provider reads {dash_targets} (provider paths {paths})")
    for sub in ("datasources", "dashboards"):
        host = (COMPOSE / "provisioning" / sub).resolve()
        if mounts.get(("grafana", f"/etc/grafana/provisioning/{sub}")) != host:
            err(f"grafana: provisioning/{sub} is not mounted at /etc/grafana/provisioning/{sub}")
    dash = json.loads(dashboard.read_text(encoding="utf-8"))
    var = [v for v in dash.get("templating", {}).get("list", []) if v.get("name") == "datasource"]
    if not var or var[0].get("type") != "datasource" or var[0].get("query") != "prometheus":
        err("dashboard: expected a ${datasource} variable of type datasource for prometheus")
    if mounts.get(("alertmanager", "/etc/alertmanager/alertmanager.yml")) != (COMPOSE / "alertmanager.yml").resolve():
        err("alertmanager: deploy/compose/alertmanager.yml is not mounted as its config")
    finish(f"{len(services)} services: build context, bind mounts, pinned images and wiring are right")


if __name__ == "__main__":
    cmd = sys.argv[1]
    {"kustomizations": check_kustomizations, "crds": check_crds, "consistency": check_consistency, "compose": check_compose}.get(cmd, lambda: split_builtin(sys.argv[2]))()
