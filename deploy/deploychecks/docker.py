"""The Dockerfile: hadolint, and the hardening and build context hadolint does not check."""
import pathlib
import re
import shutil
import tempfile

from deploychecks import common
from deploychecks.common import ROOT, indent, read_raw, text_lines


def check_hadolint(report):
    # Fails on any finding, down to style level (hadolint's default threshold
    # would let style and info findings pass).
    res = common.run(["hadolint", "--no-color", "--failure-threshold", "style", "Dockerfile"])
    out = res.stdout.rstrip("\n")
    if res.returncode != 0 or out:
        report.write(out + "\n")
        return 1
    version = re.search(r"[0-9][0-9.]*", common.run(["hadolint", "--version"], stderr=None).stdout)
    report.say(f"ok: hadolint {version.group(0) if version else ''}: no findings")
    return 0


def cargo_version(cargo_toml):
    """`sed -n '/^\\[package\\]/,/^\\[/ s/^version *= *"\\(.*\\)"/\\1/p' Cargo.toml`"""
    found, in_package = [], False
    for line in text_lines(cargo_toml):
        if in_package:
            in_package = not line.startswith("[")
        elif line.startswith("[package]"):
            in_package = True
        else:
            continue
        m = re.match(r'version *= *"(.*)"', line)
        if m:
            found.append(m.group(1) + line[m.end():])
    return "\n".join(found).rstrip("\n")


def dockerfile_problems(dockerfile, cargo_toml, dockerignore):
    """(problems, ARG VERSION default): what hadolint does not check, the
    hardening this repository promises. Arguments are the files' texts."""
    lines = text_lines(dockerfile)
    problems = []
    from_lines = [line for line in lines if line.startswith("FROM ")]
    if not from_lines:
        return ["no FROM line in the Dockerfile"], ""
    froms = "\n".join((re.split(r"[ \t]+", line.strip(" \t")) + [""])[1] for line in from_lines).rstrip("\n")
    images = froms.split("\n")
    if len(images) < 2:
        problems.append("not a multi-stage build")
    for img in images:
        if "@sha256:" in img:
            pass
        elif img.endswith((":latest", ":")):
            problems.append(f"base image {img} is not pinned to an exact tag")
        elif ":" not in img:
            problems.append(f"base image {img} has no tag")

    def has(pattern, whole_line=False):
        return any((re.fullmatch if whole_line else re.search)(pattern, line) for line in lines)

    if not has(r"FROM rust:1.95.0-slim-bookworm AS build", whole_line=True):
        problems.append("builder must be rust:1.95.0-slim-bookworm")
    if not has(r"FROM gcr.io/distroless/cc-debian12:nonroot", whole_line=True):
        problems.append("final image must be gcr.io/distroless/cc-debian12:nonroot")
    if not has(r"cargo build --release --locked"):
        problems.append("no release build (cargo build --release --locked)")
    users = [line for line in lines if line.startswith("USER ")]
    if (users[-1] if users else "") != "USER 65532:65532":
        problems.append("last USER must be the numeric 65532:65532")
    if not has(r"^ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/"):
        problems.append("TALKOVER_STATE_FILE must be on the volume")
    if not has(r'^VOLUME \["/var/lib/talkover-exporter"\]'):
        problems.append("VOLUME /var/lib/talkover-exporter missing")
    for label in ("version", "source", "licenses", "title", "description"):
        if not has(rf"org.opencontainers.image.{label}="):
            problems.append(f"OCI label org.opencontainers.image.{label} missing")
    want_version = cargo_version(cargo_toml)
    have_version = "\n".join(line[len("ARG VERSION="):] for line in lines if line.startswith("ARG VERSION=")).rstrip("\n")
    if not want_version or have_version != want_version:
        problems.append(f"ARG VERSION default ({have_version}) must equal the Cargo.toml version ({want_version})")
    for pattern in ("target", ".git"):
        if not any(re.fullmatch(rf"(?:{pattern}/?|\*)", line) for line in text_lines(dockerignore)):
            problems.append(f".dockerignore does not exclude {pattern}")
    return problems, have_version


def check_dockerfile_policy(report):
    problems, version = dockerfile_problems(read_raw("Dockerfile"), read_raw("Cargo.toml"), read_raw(".dockerignore"))
    for p in problems:
        report.fail(p)
    if problems:
        return 1
    report.say(f"ok: multi-stage, pinned bases, release build, USER 65532, OCI labels, version {version} = Cargo.toml")
    return 0



def build_copies(dockerfile):
    """(sources, destination) of each COPY of the build stage (the first)
    that reads the build context (no --from), the destination relative to
    its WORKDIR."""
    copies, stages = [], 0
    for line in text_lines(dockerfile):
        words = line.split()
        if words[:1] == ["FROM"]:
            stages += 1
            if stages > 1:
                break
        elif words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            args = [w for w in words[1:] if not w.startswith("--")]
            copies.append((args[:-1], args[-1]))
    return copies


def context_problems(dockerfile, dockerignore):
    """The build stage's COPY sources that .dockerignore keeps out of the
    context (an allow-list: `*`, then `!path` for each path let in)."""
    lines = text_lines(dockerignore)
    problems = []
    for sources, _ in build_copies(dockerfile):
        for src in sources:
            if "*" in lines and f"!{src}" not in lines and f"!{src}/" not in lines:
                problems.append(f"the Dockerfile copies {src}, which .dockerignore leaves out of the build context")
    return problems


def assemble_context(dockerfile, root, into):
    """Copies what the build stage COPYs from `root` into `into`, where its
    WORKDIR would hold it."""
    for sources, dest in build_copies(dockerfile):
        for src in sources:
            if dest.endswith("/"):
                target = into / dest / pathlib.Path(src).name
            else:
                target = into / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (root / src).is_dir() else shutil.copy)(root / src, target)


def check_docker_context(report, root=None):
    # Cargo reads every target of the workspace (tests and benches too)
    # before it builds one: a build context without them cannot build the
    # binary. No container engine here, so cargo reads the manifest of a
    # copy of what the build stage COPYs; asked for a binary that does not
    # exist, it answers "no bin target named" only once the manifest loaded.
    root = root or ROOT
    dockerfile = read_raw(root / "Dockerfile")
    problems = context_problems(dockerfile, read_raw(root / ".dockerignore"))
    for p in problems:
        report.fail(p)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = pathlib.Path(tmp)
        assemble_context(dockerfile, root, ctx)
        res = common.run(["cargo", "check", "--offline", "--locked", "--quiet",
                          "--manifest-path", str(ctx / "Cargo.toml"), "--bin", "no-such-bin"])
    if "no bin target named" not in res.stdout:
        report.fail("cargo cannot read the workspace from the build context:")
        report.write(indent(res.stdout, drop_blank=True))
        problems.append("manifest")
    if problems:
        return 1
    report.say("ok: the build context holds every path cargo reads (" + ", ".join(
        src for sources, _ in build_copies(dockerfile) for src in sources) + ")")
    return 0
