"""Unit tests of the pure parts of deploy/checks.py: each shows a check
can pass and can fail.

    python3 -m unittest discover -s deploy -p 'test_*.py'
"""

import pathlib
import sys
import tempfile
import textwrap
import unittest

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


if __name__ == "__main__":
    unittest.main()
