"""The demo stack, the PrometheusRule drift, the tool config checks, the runner.

Each check is shown to pass on the repository's own files and to fail on a
broken copy. No tool is called (the ones the checks run are replaced by
fakes); PyYAML is needed.
"""
import contextlib
import importlib.util
import io
import os
import pathlib
import subprocess
import sys
import unittest
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from deploychecks import common, compose, kubernetes, runner  # noqa: E402
from checks_testkit import TempTree, container, fake_run, quiet  # noqa: E402


# -- compose-files -------------------------------------------------------------------
class ComposeFiles(TempTree):
    def setUp(self):
        super().setUp()
        self.copy("deploy/compose", "dashboards/prometheus/rules.yml", "dashboards/talkover-webhooks.json", "Dockerfile")

    def check(self):
        report = quiet()
        status = compose.check_compose_files(report, self.root / "deploy" / "compose", self.root)
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
    path = common.K8S / "generate-prometheusrule.py"
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
        with mock.patch.object(common, "run", run):
            self.assertEqual(kubernetes.check_prometheusrule_drift(report), 1)
        self.assertEqual(report.out.getvalue(), "  --- a\n  +++ b\n")
        self.assertEqual(run.calls[0][1:], ["deploy/kubernetes/generate-prometheusrule.py", "--check"])


# -- promtool-config, amtool-config -----------------------------------------------------
class ToolConfigChecks(unittest.TestCase):
    def check(self, fn, status, out):
        report = quiet()
        run = fake_run((status, out))
        with mock.patch.object(common, "run", run):
            result = fn(report)
        return result, report.out.getvalue(), run.calls[0]

    def test_the_tools_verdict_is_the_checks_with_blank_lines_dropped(self):
        for fn, tool in ((compose.check_promtool_config, "promtool"), (compose.check_amtool_config, "amtool")):
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
            status = runner.main(list(args))
        return status, out.getvalue(), err.getvalue()

    def test_list_names_every_check_unit_tests_first(self):
        status, out, _ = self.main("--list")
        self.assertEqual(status, 0)
        self.assertEqual(out.split(), list(runner.CHECKS))
        self.assertEqual(out.split()[0], "checks-selftest")

    def test_an_unknown_check_is_a_usage_error(self):
        self.assertEqual(self.main("no-such-check"), (2, "", "unknown check: no-such-check (see --list)\n"))
        self.assertEqual(self.main("--run-one", "no-such-check")[0], 2)

    def test_failures_are_summarised_and_set_the_exit_status(self):
        answers = {"hadolint": 0, "k8s-crds": 3}
        with mock.patch.object(subprocess, "run", lambda args: subprocess.CompletedProcess(args, answers[args[-1]])):
            status, out, _ = self.main("hadolint", "k8s-crds")
        self.assertEqual(status, 1)
        self.assertEqual(out, "== hadolint\n== k8s-crds\n  -> FAILED\n\n== summary: 1 passed, 1 failed\n"
                              "  PASS  hadolint\n  FAIL  k8s-crds\n")


if __name__ == "__main__":
    unittest.main()
