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
cross-checks the rendering. The checks live in `deploy/deploychecks/`, one
module per artifact; `deploy/test_checks*.py` test them
(`python3 -m unittest discover -s deploy -p 'test_*.py'`, the
`checks-selftest` check).
"""
import sys

from deploychecks.runner import main

if __name__ == "__main__":
    sys.exit(main())
