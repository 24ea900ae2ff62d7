"""The table of checks, their own unit tests as a check, and the runner: each check in its own process."""
import os
import subprocess
import sys

from deploychecks import common
from deploychecks.common import ROOT, Report, indent
from deploychecks.docker import check_docker_context, check_dockerfile_policy, check_hadolint
from deploychecks.kubernetes import check_k8s_consistency, check_k8s_crds, check_k8s_schemas, check_kustomizations, check_prometheusrule_drift
from deploychecks.compose import check_amtool_config, check_compose_files, check_promtool_config


def check_selftest(report):
    # The checks' own unit tests (deploy/test_checks*.py): each check can fail.
    res = common.run([sys.executable, "-m", "unittest", "discover", "-s", "deploy", "-p", "test_*.py"])
    out = res.stdout.rstrip("\n")
    if res.returncode != 0:
        report.write(indent(out + "\n"))
        return 1
    report.say("ok: " + "\n".join(line for line in out.split("\n") if line.startswith("Ran ")))
    return 0


CHECKS = {
    "checks-selftest": check_selftest,
    "hadolint": check_hadolint,
    "dockerfile-policy": check_dockerfile_policy,
    "docker-context": check_docker_context,
    "kustomizations": check_kustomizations,
    "k8s-schemas": check_k8s_schemas,
    "k8s-crds": check_k8s_crds,
    "k8s-consistency": check_k8s_consistency,
    "prometheusrule-drift": check_prometheusrule_drift,
    "compose-files": check_compose_files,
    "promtool-config": check_promtool_config,
    "amtool-config": check_amtool_config,
}


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    os.chdir(ROOT)
    if args[:1] == ["--list"]:
        print("\n".join(CHECKS))
        return 0
    if args[:1] == ["--run-one"]:
        if len(args) < 2 or args[1] not in CHECKS:
            print(f"usage: {sys.argv[0]} --run-one NAME (see --list)", file=sys.stderr)
            return 2
        return CHECKS[args[1]](Report())
    passed, failed = [], []
    for name in args or list(CHECKS):
        if name not in CHECKS:
            sys.stdout.flush()
            print(f"unknown check: {name} (see --list)", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        # Its own process: a check that crashes or exits is just a failed check.
        if subprocess.run([sys.executable, str(ROOT / "deploy" / "checks.py"), "--run-one", name]).returncode == 0:
            passed.append(name)
        else:
            print("  -> FAILED")
            failed.append(name)
    print()
    print(f"== summary: {len(passed)} passed, {len(failed)} failed")
    for name in passed:
        print(f"  PASS  {name}")
    for name in failed:
        print(f"  FAIL  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
