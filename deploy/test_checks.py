"""The output helpers, the small pure helpers, kustomize rendering, the Dockerfile checks.

Each check is shown to pass on the repository's own files and to fail on a
broken copy. No tool is called (the ones the checks run are replaced by
fakes); PyYAML is needed.
"""
import pathlib
import re
import subprocess
import sys
import tempfile
import textwrap
import unittest
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from deploychecks import common, compose, docker, kubernetes  # noqa: E402
from checks_testkit import fake_run, quiet  # noqa: E402


class LabelsMatch(unittest.TestCase):
    def test_a_selector_matches_labels_that_include_it(self):
        self.assertTrue(kubernetes.labels_match({"app": "x"}, {"app": "x", "tier": "y"}))

    def test_a_different_value_or_an_empty_selector_does_not(self):
        self.assertFalse(kubernetes.labels_match({"app": "x"}, {"app": "z"}))
        self.assertFalse(kubernetes.labels_match({}, {"app": "x"}))
        self.assertFalse(kubernetes.labels_match(None, {"app": "x"}))


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
            compose.compose_volumes(svc),
            [
                ("./prometheus.yml", "/etc/prometheus/prometheus.yml", True),
                ("state", "/var/lib/talkover-exporter", False),
                (None, "/anonymous", False),
                ("./x", "/x", True),
                ("v", "/v", False),
            ],
        )

    def test_a_service_without_volumes_has_none(self):
        self.assertEqual(compose.compose_volumes({}), [])


class Kinds(unittest.TestCase):
    def test_custom_resources_are_told_from_built_in_kinds(self):
        self.assertTrue(common.is_crd({"apiVersion": "monitoring.coreos.com/v1"}))
        self.assertFalse(common.is_crd({"apiVersion": "apps/v1"}))
        self.assertFalse(common.is_crd({"apiVersion": "v1"}))
        self.assertFalse(common.is_crd({"apiVersion": "rbac.authorization.k8s.io/v1"}))

    def test_pod_containers_of_a_workload_include_init_containers(self):
        doc = {
            "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "b"}]}}},
        }
        self.assertEqual([c["name"] for c in kubernetes.pod_containers(doc)], ["a", "b"])
        self.assertEqual(kubernetes.pod_containers({"kind": "Service"}), [])


class Socket(unittest.TestCase):
    def test_listen_addresses(self):
        for good in ["0.0.0.0:9868", "127.0.0.1:1", "[::]:9868"]:
            self.assertRegex(good, kubernetes.SOCKET)
        for bad in ["localhost:9868", ":9868", "0.0.0.0", "1.2.3.4:123456"]:
            self.assertNotRegex(bad, kubernetes.SOCKET)


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
            docs = kubernetes.render(root / "variant")
            self.assertEqual([d["kind"] for d in docs], ["Deployment"])
            self.assertEqual(kubernetes.pod_containers(docs[0])[0]["image"], "talkover-exporter:9.9.9")

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
                kubernetes.render(root)

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
                kubernetes.render(root)


# -- output helpers ---------------------------------------------------------------
class Indent(unittest.TestCase):
    def test_like_sed_every_line_is_indented_blank_ones_too(self):
        self.assertEqual(common.indent("a\n\nb\n"), "  a\n  \n  b\n")
        self.assertEqual(common.indent("a\nb"), "  a\n  b")
        self.assertEqual(common.indent(""), "")

    def test_drop_blank_removes_lines_of_spaces_only(self):
        self.assertEqual(common.indent("a\n   \n\n b\n", drop_blank=True), "  a\n   b\n")


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
        self.assertEqual(docker.cargo_version(toml), "0.1.0")

    def test_no_package_section_is_no_version(self):
        self.assertEqual(docker.cargo_version('[workspace]\nversion = "1.0.0"\n'), "")


class DockerfilePolicy(unittest.TestCase):
    def setUp(self):
        self.dockerfile = common.read_raw(common.ROOT / "Dockerfile")
        self.cargo = common.read_raw(common.ROOT / "Cargo.toml")
        self.dockerignore = common.read_raw(common.ROOT / ".dockerignore")

    def problems(self, dockerfile=None, dockerignore=None):
        return docker.dockerfile_problems(
            self.dockerfile if dockerfile is None else dockerfile,
            self.cargo,
            self.dockerignore if dockerignore is None else dockerignore,
        )[0]

    def test_the_repository_dockerfile_passes(self):
        problems, version = docker.dockerfile_problems(self.dockerfile, self.cargo, self.dockerignore)
        self.assertEqual(problems, [])
        self.assertEqual(version, docker.cargo_version(self.cargo))

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
        want = docker.cargo_version(self.cargo)
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
        with mock.patch.object(common, "run", run):
            self.assertEqual(docker.check_hadolint(report), 0)
        self.assertEqual(report.out.getvalue(), "  ok: hadolint 2.15.1: no findings\n")
        self.assertIn("--failure-threshold", run.calls[0])

    def test_any_finding_fails_even_with_exit_status_0(self):
        for status in (0, 1):
            with self.subTest(status=status):
                report = quiet()
                with mock.patch.object(common, "run", fake_run((status, "Dockerfile:3 DL3007 warning: latest\n"))):
                    self.assertEqual(docker.check_hadolint(report), 1)
                self.assertEqual(report.out.getvalue(), "Dockerfile:3 DL3007 warning: latest\n")


class DockerContext(unittest.TestCase):
    """docker-context: what cargo must read is in the build context."""

    def setUp(self):
        self.dockerfile = common.read_raw(common.ROOT / "Dockerfile")
        self.dockerignore = common.read_raw(common.ROOT / ".dockerignore")

    def test_only_the_build_stage_copies_from_the_context(self):
        sources = [s for srcs, _ in docker.build_copies(self.dockerfile) for s in srcs]
        self.assertEqual(sources[:2], ["Cargo.toml", "Cargo.lock"])
        self.assertIn("tests", sources)
        self.assertNotIn("/out/talkover-exporter", sources)

    def test_a_copy_that_dockerignore_leaves_out_fails(self):
        self.assertEqual(docker.context_problems(self.dockerfile, self.dockerignore), [])
        without_tests = self.dockerignore.replace("!tests/\n", "")
        self.assertNotEqual(without_tests, self.dockerignore, "fixture .dockerignore changed: update this test")
        self.assertEqual(
            docker.context_problems(self.dockerfile, without_tests),
            ["the Dockerfile copies tests, which .dockerignore leaves out of the build context"],
        )

    def test_cargo_reads_the_assembled_context(self):
        seen = {}

        def run(args, stderr=None):
            manifest = pathlib.Path(args[args.index("--manifest-path") + 1])
            seen["tests"] = (manifest.parent / "tests").is_dir()
            seen["lib"] = (manifest.parent / "crates" / "count" / "src" / "lib.rs").is_file()
            return subprocess.CompletedProcess(args, 101, "error: no bin target named `no-such-bin`\n", "")

        with mock.patch.object(common, "run", run):
            report = quiet()
            self.assertEqual(docker.check_docker_context(report), 0, report.out.getvalue())
        self.assertEqual(seen, {"tests": True, "lib": True})

    def test_a_manifest_cargo_cannot_read_fails(self):
        out = "error: failed to parse manifest\nCaused by:\n  can't find `alert_truth_e2e` test at `tests/alert_truth_e2e.rs`\n"
        with mock.patch.object(common, "run", fake_run((101, out))):
            report = quiet()
            self.assertEqual(docker.check_docker_context(report), 1)
        self.assertIn("alert_truth_e2e", report.out.getvalue())


if __name__ == "__main__":
    unittest.main()
