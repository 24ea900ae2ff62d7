"""What the tests of the deployment checks share: fake tools, rendered variants,
a temporary copy of the repository.
"""
import io
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from deploychecks import common, kubernetes  # noqa: E402


def quiet():
    """A Report whose lines go to a buffer (report.out.getvalue())."""
    return common.Report(out=io.StringIO())


def fake_run(*results):
    """A stand-in for common.run answering (exit status, output) in turn;
    the argument lists it was called with are in .calls."""
    answers = list(results)

    def run(args, stderr=subprocess.STDOUT):
        run.calls.append(list(args))
        status, out = answers.pop(0) if len(answers) > 1 else answers[0]
        return subprocess.CompletedProcess(args, status, out, "")

    run.calls = []
    return run


def rendered(variant):
    return kubernetes.render(common.K8S / variant)


def find(docs, kind):
    return next(d for d in docs if d["kind"] == kind)


def container(docs):
    workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))
    return kubernetes.pod_spec(workload)["containers"][0]


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
            src, dst = common.ROOT / rel, self.root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)

    def edit(self, rel, old, new):
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        self.assertIn(old, text, f"fixture {rel} changed: update this test")
        path.write_text(text.replace(old, new), encoding="utf-8")

    def edit_yaml(self, rel, change):
        path = self.root / rel
        data = common.yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(common.yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
