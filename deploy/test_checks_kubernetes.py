"""The Kubernetes checks: kustomizations, schemas, custom resources, consistency.

Each check is shown to pass on the repository's own files and to fail on a
broken copy. No tool is called (the ones the checks run are replaced by
fakes); PyYAML is needed.
"""
import copy
import pathlib
import sys
import unittest
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from deploychecks import common, kubernetes  # noqa: E402
from checks_testkit import TempTree, container, env_var, fake_run, find, quiet, rendered  # noqa: E402


# -- kustomizations, k8s-schemas ----------------------------------------------------
class Kustomizations(TempTree):
    def setUp(self):
        super().setUp()
        self.copy("deploy/kubernetes")
        self.k8s = self.root / "deploy" / "kubernetes"

    def check(self):
        report = quiet()
        return kubernetes.check_kustomizations(report, self.k8s), report.problems

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
        self.assertEqual(kubernetes.split_builtin(report, self.root), 0)
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
        self.assertEqual(kubernetes.split_builtin(report, self.root, k8s), 1)
        self.assertEqual(report.problems, ["v: custom resource cert-manager.io/v1 Certificate has no check"])


class ValidateBuiltin(TempTree):
    def setUp(self):
        super().setUp()
        for name in ("a--Service--x.yaml", "a--Secret--y.yaml"):
            (self.root / name).write_text("kind: Service\n", encoding="utf-8")

    def validate(self, *answers):
        report = quiet()
        run = fake_run(*answers)
        with mock.patch.object(common, "run", run):
            status = kubernetes.validate_builtin(report, self.root, ("1.28.0", "1.34.0"))
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
        with mock.patch.object(common, "run", run):
            counted = kubernetes.check_custom_resource(report, "base: X", doc)
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
        with mock.patch.object(common, "run", fake_run((0, "SUCCESS\n"))):
            self.assertEqual(kubernetes.check_k8s_crds(report), 0)

    def test_no_custom_resource_at_all_fails(self):
        (self.root / "v").mkdir()
        (self.root / "v" / "kustomization.yaml").write_text("resources: [cm.yaml]\n", encoding="utf-8")
        (self.root / "v" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", encoding="utf-8")
        report = quiet()
        self.assertEqual(kubernetes.check_k8s_crds(report, self.root), 1)
        self.assertEqual(report.problems, ["no ServiceMonitor/PrometheusRule found"])


# -- k8s-consistency ------------------------------------------------------------------
class Consistency(unittest.TestCase):
    """check_variant on the rendered variants, then on one broken copy each."""

    def problems(self, variant, change=None):
        docs = copy.deepcopy(rendered(variant))
        if change:
            change(docs)
        report = quiet()
        kubernetes.check_variant(report, variant, docs)
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
            kubernetes.pod_spec(find(docs, "Deployment"))["securityContext"].pop("seccompProfile")

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
        self.assertFalse(kubernetes.check_variant(report, "base", docs))
        self.assertEqual(report.problems, ["base: expected exactly one Deployment or StatefulSet, found 2"])


class SameRendering(unittest.TestCase):
    def test_the_same_objects_in_another_order_match(self):
        docs = rendered("base")
        self.assertTrue(kubernetes.same_rendering(docs, common.yaml.safe_dump_all(list(reversed(docs)))))

    def test_one_changed_field_does_not(self):
        docs = rendered("base")
        other = copy.deepcopy(docs)
        find(other, "Deployment")["spec"]["replicas"] = 2
        self.assertFalse(kubernetes.same_rendering(docs, common.yaml.safe_dump_all(other)))


class K8sConsistency(TempTree):
    def test_the_repository_passes_and_kubectl_output_is_compared(self):
        report = quiet()
        run = fake_run(*[(0, common.yaml.safe_dump_all(rendered(v))) for v in ("base", "sharded")])
        with mock.patch.object(common, "run", run):
            self.assertEqual(kubernetes.check_k8s_consistency(report, kubectl="kubectl"), 0, report.out.getvalue())
        self.assertEqual([c[:2] for c in run.calls], [["kubectl", "kustomize"]] * 2)

    def test_a_kubectl_rendering_that_differs_fails(self):
        report = quiet()
        with mock.patch.object(common, "run", fake_run((0, "kind: Other\nmetadata: {name: x}\n"))):
            self.assertEqual(kubernetes.check_k8s_consistency(report, kubectl="kubectl"), 1)
        self.assertEqual(report.problems, [f"{v}: `kubectl kustomize` output differs from this check's rendering" for v in ("base", "sharded")])


if __name__ == "__main__":
    unittest.main()
