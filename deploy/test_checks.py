"""Unit tests of deploy/checks.py: each check is shown to pass on the
repository's own files and to fail on a broken copy. No tool is called (the
ones the checks run are replaced by fakes); PyYAML is needed.

    python3 -m unittest discover -s deploy -p 'test_*.py'
"""

import contextlib
import copy
import importlib.util
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import checks  # noqa: E402


class LabelsMatch(unittest.TestCase):
    def test_a_selector_matches_labels_that_include_it(self):
        self.assertTrue(checks.labels_match({"app": "x"}, {"app": "x", "tier": "y"}))

    def test_a_different_value_or_an_empty_selector_does_not(self):
        self.assertFalse(checks.labels_match({"app": "x"}, {"app": "z"}))
        self.assertFalse(checks.labels_match({}, {"app": "x"}))
        self.assertFalse(checks.labels_match(None, {"app": "x"}))


class ComposeVolumes(unittest.TestCase):
    def test_short_and_long_syntax(self):
        svc = {
            "volumes": [
                "./prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                "state:/var/lib/talkover-exporter",
                "/anonymous",
                {"type": "bind", "source": "./x", "target": "/x"},
                {"type": "volume", "source": "v", "target": "/v"},
            ]
        }
        self.assertEqual(
            checks.compose_volumes(svc),
            [
                ("./prometheus.yml", "/etc/prometheus/prometheus.yml", True),
                ("state", "/var/lib/talkover-exporter", False),
                (None, "/anonymous", False),
                ("./x", "/x", True),
                ("v", "/v", False),
            ],
        )

    def test_a_service_without_volumes_has_none(self):
        self.assertEqual(checks.compose_volumes({}), [])


class Kinds(unittest.TestCase):
    def test_custom_resources_are_told_from_built_in_kinds(self):
        self.assertTrue(checks.is_crd({"apiVersion": "monitoring.coreos.com/v1"}))
        self.assertFalse(checks.is_crd({"apiVersion": "apps/v1"}))
        self.assertFalse(checks.is_crd({"apiVersion": "v1"}))
        self.assertFalse(checks.is_crd({"apiVersion": "rbac.authorization.k8s.io/v1"}))

    def test_pod_containers_of_a_workload_include_init_containers(self):
        doc = {
            "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "b"}]}}},
        }
        self.assertEqual([c["name"] for c in checks.pod_containers(doc)], ["a", "b"])
        self.assertEqual(checks.pod_containers({"kind": "Service"}), [])


class Socket(unittest.TestCase):
    def test_listen_addresses(self):
        for good in ["0.0.0.0:9868", "127.0.0.1:1", "[::]:9868"]:
            self.assertRegex(good, checks.SOCKET)
        for bad in ["localhost:9868", ":9868", "0.0.0.0", "1.2.3.4:123456"]:
            self.assertNotRegex(bad, checks.SOCKET)


class Render(unittest.TestCase):
    """The kustomize subset: resources, `$patch: delete`, images; anything
    else, or a patch that matches nothing, is refused."""

    def write(self, root, files):
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")

    DEPLOYMENT = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: exporter}
        spec:
          template:
            spec:
              containers:
                - {name: exporter, image: "talkover-exporter:0.1.0"}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: exporter}
        """

    def test_resources_delete_patches_and_images(self):
        with tempfile.TemporaryDirectory() as d:
            root = pathlib.Path(d)
            self.write(
                root,
                {
                    "base/all.yaml": self.DEPLOYMENT,
                    "base/kustomization.yaml": "resources: [all.yaml]\n",
                    "variant/kustomization.yaml": """\
                        resources: [../base]
                        patches:
                          - patch: |
                              apiVersion: v1
                              kind: Service
                              metadata: {name: exporter}
                              $patch: delete
                        images:
                          - {name: talkover-exporter, newTag: "9.9.9"}
                        """,
                },
            )
            docs = checks.render(root / "variant")
            self.assertEqual([d["kind"] for d in docs], ["Deployment"])
            self.assertEqual(checks.pod_containers(docs[0])[0]["image"], "talkover-exporter:9.9.9")

    def test_a_patch_that_matches_nothing_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            root = pathlib.Path(d)
            self.write(
                root,
                {
                    "all.yaml": self.DEPLOYMENT,
                    "kustomization.yaml": """\
                        resources: [all.yaml]
                        patches:
                          - patch: |
                              apiVersion: v1
                              kind: ConfigMap
                              metadata: {name: nothing}
                              $patch: delete
                        """,
                },
            )
            with self.assertRaises(SystemExit):
                checks.render(root)

    def test_a_strategic_merge_patch_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            root = pathlib.Path(d)
            self.write(
                root,
                {
                    "all.yaml": self.DEPLOYMENT,
                    "kustomization.yaml": """\
                        resources: [all.yaml]
                        patches:
                          - patch: |
                              apiVersion: v1
                              kind: Service
                              metadata: {name: exporter, labels: {a: b}}
                        """,
                },
            )
            with self.assertRaises(SystemExit):
                checks.render(root)


# -- shared helpers -------------------------------------------------------------
def quiet():
    """A Report whose lines go to a buffer (report.out.getvalue())."""
    return checks.Report(out=io.StringIO())


def fake_run(*results):
    """A stand-in for checks.run answering (exit status, output) in turn;
    the argument lists it was called with are in .calls."""
    answers = list(results)

    def run(args, stderr=subprocess.STDOUT):
        run.calls.append(list(args))
        status, out = answers.pop(0) if len(answers) > 1 else answers[0]
        return subprocess.CompletedProcess(args, status, out, "")

    run.calls = []
    return run


def rendered(variant):
    return checks.render(checks.K8S / variant)


def find(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


def container(docs):
    workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))
    return checks.pod_spec(workload)["containers"][0]


def env_var(docs, name):
    return next(e for e in container(docs)["env"] if e["name"] == name)


class TempTree(unittest.TestCase):
    """Tests that work on a copy of repository files in a temporary root."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.root = pathlib.Path(self._tmp.name)

    def copy(self, *paths):
        for rel in paths:
            src, dst = checks.ROOT / rel, self.root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)

    def edit(self, rel, old, new):
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        self.assertIn(old, text, f"fixture {rel} changed: update this test")
        path.write_text(text.replace(old, new), encoding="utf-8")

    def edit_yaml(self, rel, change):
        path = self.root / rel
        data = checks.yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(checks.yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


# -- output helpers ---------------------------------------------------------------
class Indent(unittest.TestCase):
    def test_like_sed_every_line_is_indented_blank_ones_too(self):
        self.assertEqual(checks.indent("a\n\nb\n"), "  a\n  \n  b\n")
        self.assertEqual(checks.indent("a\nb"), "  a\n  b")
        self.assertEqual(checks.indent(""), "")

    def test_drop_blank_removes_lines_of_spaces_only(self):
        self.assertEqual(checks.indent("a\n   \n\n b\n", drop_blank=True), "  a\n   b\n")


class ReportFinish(unittest.TestCase):
    def test_no_problem_is_ok(self):
        report = quiet()
        self.assertEqual(report.finish("fine"), 0)
        self.assertEqual(report.out.getvalue(), "  ok: fine\n")

    def test_a_problem_fails_with_a_count(self):
        report = quiet()
        report.fail("broken")
        self.assertEqual(report.finish("fine"), 1)
        self.assertEqual(report.out.getvalue(), "  FAIL: broken\n  1 problem(s)\n")


# -- dockerfile-policy, hadolint ---------------------------------------------------
class CargoVersion(unittest.TestCase):
    def test_the_package_version_only(self):
        toml = '[workspace]\nversion = "9.9.9"\n[package]\nname = "x"\nversion = "0.1.0"\n[dependencies]\nversion = "2"\n'
        self.assertEqual(checks.cargo_version(toml), "0.1.0")

    def test_no_package_section_is_no_version(self):
        self.assertEqual(checks.cargo_version('[workspace]\nversion = "1.0.0"\n'), "")


class DockerfilePolicy(unittest.TestCase):
    def setUp(self):
        self.dockerfile = checks.read_raw(checks.ROOT / "Dockerfile")
        self.cargo = checks.read_raw(checks.ROOT / "Cargo.toml")
        self.dockerignore = checks.read_raw(checks.ROOT / ".dockerignore")

    def problems(self, dockerfile=None, dockerignore=None):
        return checks.dockerfile_problems(
            self.dockerfile if dockerfile is None else dockerfile,
            self.cargo,
            self.dockerignore if dockerignore is None else dockerignore,
        )[0]

    def test_the_repository_dockerfile_passes(self):
        problems, version = checks.dockerfile_problems(self.dockerfile, self.cargo, self.dockerignore)
        self.assertEqual(problems, [])
        self.assertEqual(version, checks.cargo_version(self.cargo))

    def test_each_hardening_rule_can_fail(self):
        cases = [
            ("FROM gcr.io/distroless/cc-debian12:nonroot", "FROM gcr.io/distroless/cc-debian12:latest",
             "base image gcr.io/distroless/cc-debian12:latest is not pinned to an exact tag"),
            ("FROM gcr.io/distroless/cc-debian12:nonroot", "FROM gcr.io/distroless/cc-debian12:debug-nonroot",
             "final image must be gcr.io/distroless/cc-debian12:nonroot"),
            ("FROM rust:1.95.0-slim-bookworm AS build", "FROM rust AS build", "base image rust has no tag"),
            ("FROM rust:1.95.0-slim-bookworm AS build\n", "", "not a multi-stage build"),
            ("cargo build --release --locked", "cargo build --locked", "no release build (cargo build --release --locked)"),
            ("USER 65532:65532", "USER nonroot", "last USER must be the numeric 65532:65532"),
            ("ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/", "ENV TALKOVER_STATE_FILE=/tmp/",
             "TALKOVER_STATE_FILE must be on the volume"),
            ('VOLUME ["/var/lib/talkover-exporter"]', "", "VOLUME /var/lib/talkover-exporter missing"),
            ("org.opencontainers.image.licenses=", "org.opencontainers.image.license=",
             "OCI label org.opencontainers.image.licenses missing"),
        ]
        for old, new, expected in cases:
            with self.subTest(expected):
                self.assertIn(old, self.dockerfile, "Dockerfile changed: update this test")
                self.assertIn(expected, self.problems(dockerfile=self.dockerfile.replace(old, new)))

    def test_arg_version_must_equal_the_cargo_version(self):
        broken = re.sub(r"(?m)^ARG VERSION=.*$", "ARG VERSION=0.0.0-dev", self.dockerfile)
        want = checks.cargo_version(self.cargo)
        self.assertIn(f"ARG VERSION default (0.0.0-dev) must equal the Cargo.toml version ({want})", self.problems(broken))

    def test_no_from_line_fails(self):
        self.assertEqual(self.problems(dockerfile="# nothing\n"), ["no FROM line in the Dockerfile"])

    def test_dockerignore_must_exclude_target_and_git(self):
        self.assertEqual(self.problems(dockerignore="target/\n.git\n"), [])
        self.assertEqual(
            self.problems(dockerignore="!src/\n"),
            [".dockerignore does not exclude target", ".dockerignore does not exclude .git"],
        )


class Hadolint(unittest.TestCase):
    def test_no_findings_passes_with_the_version(self):
        run = fake_run((0, ""), (0, "Haskell Dockerfile Linter 2.15.1\n"))
        report = quiet()
        with mock.patch.object(checks, "run", run):
            self.assertEqual(checks.check_hadolint(report), 0)
        self.assertEqual(report.out.getvalue(), "  ok: hadolint 2.15.1: no findings\n")
        self.assertIn("--failure-threshold", run.calls[0])

    def test_any_finding_fails_even_with_exit_status_0(self):
        for status in (0, 1):
            with self.subTest(status=status):
                report = quiet()
                with mock.patch.object(checks, "run", fake_run((status, "Dockerfile:3 DL3007 warning: latest\n"))):
                    self.assertEqual(checks.check_hadolint(report), 1)
                self.assertEqual(report.out.getvalue(), "Dockerfile:3 DL3007 warning: latest\n")


# -- kustomizations, k8s-schemas ----------------------------------------------------
class Kustomizations(TempTree):
    def setUp(self):
        super().setUp()
        self.copy("deploy/kubernetes")
        self.k8s = self.root / "deploy" / "kubernetes"

    def check(self):
        report = quiet()
        return checks.check_kustomizations(report, self.k8s), report.problems

    def test_the_repository_kustomizations_pass(self):
        self.assertEqual(self.check(), (0, []))

    def test_a_manifest_not_listed_fails(self):
        (self.k8s / "base" / "forgotten.yaml").write_text("kind: ConfigMap\n", encoding="utf-8")
        status, problems = self.check()
        self.assertEqual(status, 1)
        self.assertTrue(any("forgotten.yaml is not listed in" in p for p in problems), problems)

    def test_a_missing_or_remote_resource_and_an_unknown_field_fail(self):
        def change(k):
            k["resources"] += ["gone.yaml", "https://example.com/x.yaml"]
            k["namePrefix"] = "x-"
        self.edit_yaml("deploy/kubernetes/base/kustomization.yaml", change)
        status, problems = self.check()
        self.assertEqual(status, 1)
        text = "\n".join(problems)
        for expected in ("resource gone.yaml does not exist", "remote resource https://example.com/x.yaml",
                         "fields ['namePrefix'] are not understood"):
            self.assertIn(expected, text)


class SplitBuiltin(TempTree):
    def test_built_in_objects_are_written_one_per_file(self):
        report = quiet()
        self.assertEqual(checks.split_builtin(report, self.root), 0)
        files = sorted(p.name for p in self.root.glob("*.yaml"))
        self.assertIn("base--Deployment--talkover-exporter.yaml", files)
        self.assertIn("sharded--StatefulSet--talkover-exporter.yaml", files)
        self.assertFalse([f for f in files if "ServiceMonitor" in f or "PrometheusRule" in f])

    def test_a_custom_resource_without_a_check_fails(self):
        k8s = self.root / "k8s"
        (k8s / "v").mkdir(parents=True)
        (k8s / "v" / "kustomization.yaml").write_text("resources: [cert.yaml]\n", encoding="utf-8")
        (k8s / "v" / "cert.yaml").write_text("apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\n", encoding="utf-8")
        report = quiet()
        self.assertEqual(checks.split_builtin(report, self.root, k8s), 1)
        self.assertEqual(report.problems, ["v: custom resource cert-manager.io/v1 Certificate has no check"])


class ValidateBuiltin(TempTree):
    def setUp(self):
        super().setUp()
        for name in ("a--Service--x.yaml", "a--Secret--y.yaml"):
            (self.root / name).write_text("kind: Service\n", encoding="utf-8")

    def validate(self, *answers):
        report = quiet()
        run = fake_run(*answers)
        with mock.patch.object(checks, "run", run):
            status = checks.validate_builtin(report, self.root, ("1.28.0", "1.34.0"))
        return status, report.out.getvalue(), run.calls

    def test_valid_objects_pass_for_every_version(self):
        status, out, calls = self.validate((0, ""))
        self.assertEqual(status, 0)
        self.assertEqual(out, "  ok: 2 objects valid against Kubernetes 1.28.0 (strict)\n"
                              "  ok: 2 objects valid against Kubernetes 1.34.0 (strict)\n")
        self.assertEqual([c[:5] for c in calls], [["kubernetes-validate", "--strict", "--quiet", "-k", v] for v in ("1.28.0", "1.34.0")])
        self.assertEqual(len(calls[0]), 7)

    def test_a_warning_fails_even_with_exit_status_0_and_paths_are_shortened(self):
        warning = f"WARN {self.root}/a--Service--x.yaml: no schema for version 1.34.0\n"
        status, out, _ = self.validate((0, ""), (0, warning))
        self.assertEqual(status, 1)
        self.assertEqual(out, "  ok: 2 objects valid against Kubernetes 1.28.0 (strict)\n"
                              "  WARN a--Service--x.yaml: no schema for version 1.34.0\n")

    def test_an_invalid_object_fails_and_later_versions_say_no_ok(self):
        status, out, _ = self.validate((1, f"ERROR {self.root}/a--Secret--y.yaml did not validate\n"), (0, ""))
        self.assertEqual(status, 1)
        self.assertEqual(out, "  ERROR a--Secret--y.yaml did not validate\n")


# -- k8s-crds ---------------------------------------------------------------------
class CustomResources(unittest.TestCase):
    def setUp(self):
        docs = rendered("base")
        self.monitor = copy.deepcopy(find(docs, "ServiceMonitor"))
        self.rule = copy.deepcopy(find(docs, "PrometheusRule"))

    def check(self, doc, promtool=(0, "SUCCESS\n")):
        report = quiet()
        run = fake_run(promtool)
        with mock.patch.object(checks, "run", run):
            counted = checks.check_custom_resource(report, "base: X", doc)
        return counted, report.problems, run.calls

    def test_the_repository_service_monitor_and_rule_pass(self):
        self.assertEqual(self.check(self.monitor), (True, [], []))
        counted, problems, calls = self.check(self.rule)
        self.assertEqual((counted, problems), (True, []))
        self.assertEqual(calls[0][:3], ["promtool", "check", "rules"])

    def test_service_monitor_mistakes_fail(self):
        def no_endpoints(spec):
            spec["endpoints"] = []

        def bad_interval(spec):
            spec["endpoints"][0]["interval"] = "30 seconds"

        def relative_path(spec):
            spec["endpoints"][0]["path"] = "metrics"

        def empty_selector(spec):
            spec["selector"] = {}

        def unknown_field(spec):
            spec["scrapeClass"] = "x"

        cases = [
            (no_endpoints, "spec.endpoints must be a non-empty list"),
            (bad_interval, "endpoint interval '30 seconds' is not a duration"),
            (relative_path, "endpoint path must start with /"),
            (empty_selector, "spec.selector selects nothing"),
            (unknown_field, "unexpected spec fields ['scrapeClass']"),
        ]
        for change, expected in cases:
            with self.subTest(expected):
                doc = copy.deepcopy(self.monitor)
                change(doc["spec"])
                self.assertIn(f"base: X: {expected}", self.check(doc)[1])

    def test_prometheus_rule_mistakes_fail(self):
        doc = copy.deepcopy(self.rule)
        group = doc["spec"]["groups"][0]
        group["rules"][0]["alert"] = group["rules"][0]["record"] = "Both"
        doc["spec"]["groups"].append({"rules": []})
        problems = self.check(doc)[1]
        self.assertIn(f"base: X: group {group['name']}: rule needs exactly one of record/alert, and expr", problems)
        self.assertIn("base: X: group without name or rules: {'rules': []}", problems)

    def test_a_promtool_failure_fails_with_its_output(self):
        counted, problems, _ = self.check(self.rule, promtool=(1, "FAILED: bad expr\n"))
        self.assertEqual(problems, ["base: X: promtool check rules failed on spec.groups:\nFAILED: bad expr\n"])

    def test_unknown_kinds_and_empty_specs_are_not_counted(self):
        self.assertEqual(self.check({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "spec": {"a": 1}})[:2],
                         (False, ["base: X: unknown custom resource kind monitoring.coreos.com/v1 PodMonitor"]))
        doc = copy.deepcopy(self.monitor)
        doc["spec"] = {}
        self.assertEqual(self.check(doc)[:2], (False, ["base: X: spec must be a non-empty mapping"]))


class K8sCrds(TempTree):
    def test_the_repository_passes(self):
        report = quiet()
        with mock.patch.object(checks, "run", fake_run((0, "SUCCESS\n"))):
            self.assertEqual(checks.check_k8s_crds(report), 0)

    def test_no_custom_resource_at_all_fails(self):
        (self.root / "v").mkdir()
        (self.root / "v" / "kustomization.yaml").write_text("resources: [cm.yaml]\n", encoding="utf-8")
        (self.root / "v" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", encoding="utf-8")
        report = quiet()
        self.assertEqual(checks.check_k8s_crds(report, self.root), 1)
        self.assertEqual(report.problems, ["no ServiceMonitor/PrometheusRule found"])


# -- k8s-consistency ------------------------------------------------------------------
class Consistency(unittest.TestCase):
    """check_variant on the rendered variants, then on one broken copy each."""

    def problems(self, variant, change=None):
        docs = copy.deepcopy(rendered(variant))
        if change:
            change(docs)
        report = quiet()
        checks.check_variant(report, variant, docs)
        return report.problems

    def assertFails(self, variant, change, expected):
        problems = self.problems(variant, change)
        self.assertTrue(any(expected in p for p in problems), f"{expected!r} not in {problems}")

    def test_both_variants_pass(self):
        for variant in ("base", "sharded"):
            with self.subTest(variant):
                self.assertEqual(self.problems(variant), [])

    def test_shard_count_must_equal_replicas(self):
        def change(docs):
            env_var(docs, "TALKOVER_SHARD_COUNT")["value"] = "2"
        self.assertFails("sharded", change, "TALKOVER_SHARD_COUNT (2) != replicas (3)")

    def test_shard_index_must_come_from_the_pod_index_label(self):
        def change(docs):
            env_var(docs, "TALKOVER_SHARD_INDEX")["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name"
        self.assertFails("sharded", change, "TALKOVER_SHARD_INDEX must come from the pod-index label, got metadata.name")

    def test_the_stateful_set_needs_its_headless_service(self):
        def change(docs):
            find(docs, "StatefulSet")["spec"]["serviceName"] = "elsewhere"
        self.assertFails("sharded", change, "serviceName must name a headless Service of sharded")

    def test_security_context_rules(self):
        def root_user(docs):
            container(docs)["securityContext"]["runAsUser"] = 0

        def writable_root(docs):
            container(docs)["securityContext"]["readOnlyRootFilesystem"] = False

        def keeps_capabilities(docs):
            container(docs)["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}

        def no_seccomp(docs):
            checks.pod_spec(find(docs, "Deployment"))["securityContext"].pop("seccompProfile")

        for change, expected in [
            (root_user, "must run as non-root user 65532"),
            (writable_root, "readOnlyRootFilesystem must be true"),
            (keeps_capabilities, "capabilities must drop ALL"),
            (no_seccomp, "pod seccompProfile must be RuntimeDefault"),
        ]:
            with self.subTest(expected):
                self.assertFails("base", change, expected)

    def test_the_token_comes_from_a_secret_file(self):
        def token_env(docs):
            container(docs)["env"].append({"name": "TALKOVER_TOKEN", "value": "t"})

        def secret_gone(docs):
            docs.remove(find(docs, "Secret"))

        self.assertFails("base", token_env, "the token must come from the file, not TALKOVER_TOKEN")
        self.assertFails("base", secret_gone, "is not part of base")

    def test_probes_ports_and_listen_address(self):
        def readiness(docs):
            container(docs)["readinessProbe"]["httpGet"]["path"] = "/ready"

        def listen(docs):
            c = container(docs)
            c["args"] = [a if not a.startswith("--web.listen-address=") else "--web.listen-address=:9868" for a in c["args"]]

        def port(docs):
            container(docs)["ports"][0]["containerPort"] = 8080

        self.assertFails("base", readiness, "readinessProbe must GET /-/ready on http-metrics")
        self.assertFails("base", listen, "--web.listen-address=HOST:PORT")
        self.assertFails("base", port, "needs port http-metrics = 9868")

    def test_single_writer_deployment(self):
        def two_replicas(docs):
            find(docs, "Deployment")["spec"]["replicas"] = 2
        self.assertFails("base", two_replicas, "single-writer state: replicas 1 and strategy Recreate")

    def test_services_and_the_service_monitor_must_meet(self):
        def selects_nothing(docs):
            find(docs, "Service")["spec"]["selector"] = {"app": "other"}

        def wrong_port(docs):
            find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "metrics"

        def no_rule(docs):
            docs.remove(find(docs, "PrometheusRule"))

        self.assertFails("base", selects_nothing, "Service talkover-exporter selects no pod")
        self.assertFails("base", wrong_port, "ServiceMonitor port metrics not on Service talkover-exporter")
        self.assertFails("base", no_rule, "base: no PrometheusRule")

    def test_exactly_one_workload(self):
        docs = copy.deepcopy(rendered("base"))
        docs.append(copy.deepcopy(find(rendered("sharded"), "StatefulSet")))
        report = quiet()
        self.assertFalse(checks.check_variant(report, "base", docs))
        self.assertEqual(report.problems, ["base: expected exactly one Deployment or StatefulSet, found 2"])


class SameRendering(unittest.TestCase):
    def test_the_same_objects_in_another_order_match(self):
        docs = rendered("base")
        self.assertTrue(checks.same_rendering(docs, checks.yaml.safe_dump_all(list(reversed(docs)))))

    def test_one_changed_field_does_not(self):
        docs = rendered("base")
        other = copy.deepcopy(docs)
        find(other, "Deployment")["spec"]["replicas"] = 2
        self.assertFalse(checks.same_rendering(docs, checks.yaml.safe_dump_all(other)))


class K8sConsistency(TempTree):
    def test_the_repository_passes_and_kubectl_output_is_compared(self):
        report = quiet()
        run = fake_run(*[(0, checks.yaml.safe_dump_all(rendered(v))) for v in ("base", "sharded")])
        with mock.patch.object(checks, "run", run):
            self.assertEqual(checks.check_k8s_consistency(report, kubectl="kubectl"), 0, report.out.getvalue())
        self.assertEqual([c[:2] for c in run.calls], [["kubectl", "kustomize"]] * 2)

    def test_a_kubectl_rendering_that_differs_fails(self):
        report = quiet()
        with mock.patch.object(checks, "run", fake_run((0, "kind: Other\nmetadata: {name: x}\n"))):
            self.assertEqual(checks.check_k8s_consistency(report, kubectl="kubectl"), 1)
        self.assertEqual(report.problems, [f"{v}: `kubectl kustomize` output differs from this check's rendering" for v in ("base", "sharded")])


# -- compose-files -------------------------------------------------------------------
class ComposeFiles(TempTree):
    def setUp(self):
        super().setUp()
        self.copy("deploy/compose", "dashboards/prometheus/rules.yml", "dashboards/talkover-webhooks.json", "Dockerfile")

    def check(self):
        report = quiet()
        status = checks.check_compose_files(report, self.root / "deploy" / "compose", self.root)
        return status, report.problems

    def assertFails(self, expected):
        status, problems = self.check()
        self.assertEqual(status, 1)
        self.assertTrue(any(expected in p for p in problems), f"{expected!r} not in {problems}")

    def test_the_repository_stack_passes(self):
        self.assertEqual(self.check(), (0, []))

    def test_an_unpinned_image_fails(self):
        self.edit_yaml("deploy/compose/docker-compose.yml", lambda c: c["services"]["grafana"].update(image="grafana/grafana:latest"))
        self.assertFails("grafana: image 'grafana/grafana:latest' is not pinned to a tag")

    def test_a_missing_build_context_or_bind_source_fails(self):
        (self.root / "Dockerfile").unlink()
        (self.root / "deploy" / "compose" / "alertmanager.yml").unlink()
        self.assertFails("talkover-exporter: Dockerfile")
        self.assertFails("alertmanager: bind mount source ./alertmanager.yml does not exist")

    def test_the_rules_must_be_mounted_where_prometheus_yml_says(self):
        self.edit_yaml("deploy/compose/prometheus.yml", lambda p: p.update(rule_files=["rules.yml"]))
        self.assertFails("prometheus.yml rule_files rules.yml is /etc/talkover/deploy/compose/rules.yml in the container")

    def test_the_exporter_must_be_scraped_every_5s(self):
        def slower(p):
            next(j for j in p["scrape_configs"] if j["job_name"] == "talkover")["scrape_interval"] = "15s"
        self.edit_yaml("deploy/compose/prometheus.yml", slower)
        self.assertFails("prometheus.yml: job talkover must scrape a compose service every 5s")

    def test_grafana_needs_a_default_datasource_and_the_dashboard(self):
        self.edit("deploy/compose/provisioning/datasources/prometheus.yml", "isDefault: true", "isDefault: false")
        self.edit_yaml("deploy/compose/provisioning/dashboards/talkover.yml",
                       lambda d: d["providers"][0]["options"].update(path="/elsewhere"))
        self.assertFails("grafana: exactly one Prometheus datasource, with a fixed uid and isDefault: true")
        self.assertFails("grafana: no dashboard provider reads")

    def test_an_undeclared_named_volume_fails(self):
        self.edit_yaml("deploy/compose/docker-compose.yml", lambda c: c["volumes"].pop("grafana-data"))
        self.assertFails("grafana: volume grafana-data is not declared under volumes:")


# -- prometheusrule-drift (deploy/kubernetes/generate-prometheusrule.py) --------------
def load_generator():
    path = checks.K8S / "generate-prometheusrule.py"
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PrometheusRuleDrift(TempTree):
    def setUp(self):
        super().setUp()
        self.gen = load_generator()
        self.copy("dashboards/prometheus/rules.yml", "deploy/kubernetes/base/prometheusrule.yaml")
        self.output = self.root / "deploy/kubernetes/base/prometheusrule.yaml"
        patches = {"ROOT": self.root, "SOURCE": self.root / "dashboards/prometheus/rules.yml", "OUTPUT": self.output}
        for name, value in patches.items():
            patcher = mock.patch.object(self.gen, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def check(self):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(sys, "argv", ["generate-prometheusrule.py", "--check"]), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = self.gen.main()
        return status, out.getvalue(), err.getvalue()

    def test_the_committed_rule_is_up_to_date(self):
        status, out, _ = self.check()
        self.assertEqual(status, 0)
        self.assertIn("is up to date with dashboards/prometheus/rules.yml", out)

    def test_an_edited_rule_is_drift(self):
        self.output.write_text(self.output.read_text(encoding="utf-8").replace("DO NOT EDIT.", "DO NOT EDIT!"), encoding="utf-8")
        status, out, err = self.check()
        self.assertEqual(status, 1)
        self.assertIn("+# GENERATED FILE, DO NOT EDIT.", out)
        self.assertIn("is stale", err)

    def test_a_source_that_is_not_one_groups_document_is_refused(self):
        with self.assertRaises(SystemExit):
            self.gen.render("groups: []\n")
        with self.assertRaises(SystemExit):
            self.gen.render("groups:\n  - name: a\n    rules: []\nextra: 1\n")

    def test_the_check_runs_the_generator_and_indents_its_output(self):
        report = quiet()
        run = fake_run((1, "--- a\n+++ b\n"))
        with mock.patch.object(checks, "run", run):
            self.assertEqual(checks.check_prometheusrule_drift(report), 1)
        self.assertEqual(report.out.getvalue(), "  --- a\n  +++ b\n")
        self.assertEqual(run.calls[0][1:], ["deploy/kubernetes/generate-prometheusrule.py", "--check"])


# -- promtool-config, amtool-config -----------------------------------------------------
class ToolConfigChecks(unittest.TestCase):
    def check(self, fn, status, out):
        report = quiet()
        run = fake_run((status, out))
        with mock.patch.object(checks, "run", run):
            result = fn(report)
        return result, report.out.getvalue(), run.calls[0]

    def test_the_tools_verdict_is_the_checks_with_blank_lines_dropped(self):
        for fn, tool in ((checks.check_promtool_config, "promtool"), (checks.check_amtool_config, "amtool")):
            with self.subTest(tool):
                self.assertEqual(self.check(fn, 0, "Checking x\n  SUCCESS\n\n"), (0, "  Checking x\n    SUCCESS\n", mock.ANY))
                result, out, args = self.check(fn, 1, "Checking x\n\n  FAILED: y\n")
                self.assertEqual((result, out, args[0]), (1, "  Checking x\n    FAILED: y\n", tool))


# -- the runner ------------------------------------------------------------------------
class Runner(unittest.TestCase):
    def setUp(self):
        self.addCleanup(os.chdir, os.getcwd())

    def main(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = checks.main(list(args))
        return status, out.getvalue(), err.getvalue()

    def test_list_names_every_check_unit_tests_first(self):
        status, out, _ = self.main("--list")
        self.assertEqual(status, 0)
        self.assertEqual(out.split(), list(checks.CHECKS))
        self.assertEqual(out.split()[0], "checks-selftest")

    def test_an_unknown_check_is_a_usage_error(self):
        self.assertEqual(self.main("no-such-check"), (2, "", "unknown check: no-such-check (see --list)\n"))
        self.assertEqual(self.main("--run-one", "no-such-check")[0], 2)

    def test_failures_are_summarised_and_set_the_exit_status(self):
        answers = {"hadolint": 0, "k8s-crds": 3}
        with mock.patch.object(checks.subprocess, "run", lambda args: subprocess.CompletedProcess(args, answers[args[-1]])):
            status, out, _ = self.main("hadolint", "k8s-crds")
        self.assertEqual(status, 1)
        self.assertEqual(out, "== hadolint\n== k8s-crds\n  -> FAILED\n\n== summary: 1 passed, 1 failed\n"
                              "  PASS  hadolint\n  FAIL  k8s-crds\n")


if __name__ == "__main__":
    unittest.main()
