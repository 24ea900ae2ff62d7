"""The demo stack (deploy/compose), and the promtool and amtool checks of its configs."""
import json
import os

from deploychecks import common
from deploychecks.common import COMPOSE, ROOT, indent, rel
from deploychecks.common import yaml


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
    res = common.run(["promtool", "check", "config", "deploy/compose/prometheus.yml"])
    report.write(indent(res.stdout, drop_blank=True))
    return res.returncode


def check_amtool_config(report):
    res = common.run(["amtool", "check-config", "deploy/compose/alertmanager.yml"])
    report.write(indent(res.stdout, drop_blank=True))
    return res.returncode
