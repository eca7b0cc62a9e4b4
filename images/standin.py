"""Stand-ins for the Dockerfiles' base images, made from Debian packages, for machines without a registry.

The Dockerfiles stay what users build (``FROM python:3.12.12-slim-bookworm``, ``FROM
gcr.io/distroless/python3-debian12:nonroot``); where those references cannot be pulled, we make an image
with what each base provides — Debian bookworm (``debootstrap --variant=minbase``) with its Python 3.11 —
import it with ``podman import`` and tag it as the reference. A reference that is already local is used as
it is: a real base someone pulled, or a stand-in of the current recipe (podman's image store outlives test
runs, so the stand-ins are made once per machine). A stand-in of an older recipe is made again.

- *python slim*: Python in a virtual environment at ``/usr/local``, so ``python``, ``pip`` and installed
  scripts live in ``/usr/local/bin`` as in the official image, and pip may install (Debian's own Python
  refuses, PEP 668). One image is tagged as every ``python:*-slim-bookworm`` reference; it is Python 3.11
  whatever the tag says, which the wheels we build do not mind.
- *distroless*: Debian's ``python3`` with the ``nonroot`` user (65532), no shell, no docs.

Both carry the build host's CA certificates: pip inside a build reaches the package index only through
them here. They belong in the stand-in, never in a Dockerfile.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from images.engine import NICE, EngineError, gist, image_exists, image_label, podman

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Label on every stand-in; bump the value when the recipe changes, so machines make it again.
LABEL = "io.log-sidecar.stand-in"
RECIPE = "bookworm-minbase-1"
LOCK = Path("/var/tmp/log-sidecar-stand-in.lock")
TRIMMED = ("./usr/share/doc", "./usr/share/man", "./usr/share/info", "./usr/share/locale", "./var/cache/apt/*.bin")
TRIMMED_CONTENTS = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*")
SHELLS = ("./usr/bin/sh", "./usr/bin/dash", "./usr/bin/bash", "./usr/bin/rbash")
NONROOT = 65532


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of stand-in: which references it answers to and the image configuration it carries."""

    name: str
    pattern: re.Pattern[str]
    changes: tuple[str, ...]
    excluded: tuple[str, ...]


SLIM = Kind(
    "python-slim",
    re.compile(r"(docker\.io/(library/)?)?python:[\w.]+-slim-bookworm"),
    (
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ),
    TRIMMED,
)
DISTROLESS = Kind(
    "distroless",
    re.compile(r"gcr\.io/distroless/python3-debian12(:nonroot)?"),
    (
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "ENV LANG=C.UTF-8",
        f"USER {NONROOT}",
        "WORKDIR /home/nonroot",
        'ENTRYPOINT ["/usr/bin/python3"]',
    ),
    TRIMMED + SHELLS,
)
KINDS = (SLIM, DISTROLESS)


def base_references(dockerfile: Path) -> list[str]:
    """The images a Dockerfile's ``FROM`` lines name, stage names left out, in order, without repeats."""
    stages: set[str] = set()
    found: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        if words[1] not in stages and words[1] not in found:
            found.append(words[1])
        if len(words) >= 4 and words[2].upper() == "AS":
            stages.add(words[3])
    return found


def qualified(reference: str) -> str:
    """``python:3.12`` is ``docker.io/library/python:3.12``: the name podman looks a short reference up by."""
    first = reference.split("/", 1)[0]
    if "/" in reference and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if "/" in reference else f"docker.io/library/{reference}"


def kind_of(reference: str) -> Kind:
    """The stand-in for ``reference``; a base we cannot stand in for is a one-line error saying what to do."""
    for kind in KINDS:
        if kind.pattern.fullmatch(reference):
            return kind
    raise EngineError(f"no stand-in for base image {reference}: pull it (`podman pull {reference}`) or add one")


def usable(reference: str) -> bool:
    """A local image that is real (no stand-in label) or a stand-in of the current recipe."""
    if not image_exists(reference):
        return False
    label = image_label(reference, LABEL)
    return label is None or label == RECIPE


def ensure_bases(dockerfiles: Iterable[Path]) -> list[str]:
    """Make every base the Dockerfiles need that is not local yet; return the references made (often none)."""
    wanted = [qualified(ref) for dockerfile in dockerfiles for ref in base_references(dockerfile)]
    if all(usable(ref) for ref in wanted):
        return []
    with _locked():  # another test session may be making them right now
        missing = [ref for ref in dict.fromkeys(wanted) if not usable(ref)]
        if missing:
            _make(missing)
        return missing


@contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _make(references: Sequence[str]) -> None:
    by_kind = {kind.name: [ref for ref in references if kind_of(ref) is kind] for kind in KINDS}
    if os.geteuid() != 0:
        raise EngineError(f"making stand-in bases for {', '.join(references)} needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        raise EngineError("debootstrap is not installed: run `make system-deps`")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="log-sidecar-stand-in-") as work:
        root = Path(work) / "root"
        _run([*NICE, "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR])
        shutil.copyfile(host_ca_bundle(), root / "etc/ssl/certs/ca-certificates.crt")
        if by_kind[DISTROLESS.name]:
            with _nonroot_user(root):
                _import(root, Path(work) / "distroless.tar", DISTROLESS, by_kind[DISTROLESS.name])
        if by_kind[SLIM.name]:
            _run(["chroot", str(root), "python3", "-m", "venv", "/usr/local"])
            for script in (root / "usr/local/bin").glob("[aA]ctivate*"):
                script.unlink()
            _import(root, Path(work) / "slim.tar", SLIM, by_kind[SLIM.name])


def host_ca_bundle() -> Path:
    """The CA bundle this host trusts (``SSL_CERT_FILE`` when set, else OpenSSL's default file)."""
    path = Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile).resolve()
    if not path.is_file():
        raise EngineError(f"no CA bundle at {path}: set SSL_CERT_FILE to the host's bundle")
    return path


@contextmanager
def _nonroot_user(root: Path) -> Iterator[None]:
    """Distroless's ``nonroot`` user and home, for the time of one import (the slim base has no such user)."""
    saved = {name: (root / "etc" / name).read_text() for name in ("passwd", "group")}
    home = root / "home/nonroot"
    home.mkdir(parents=True)
    os.chown(home, NONROOT, NONROOT)
    (root / "etc/passwd").write_text(
        saved["passwd"] + f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (root / "etc/group").write_text(saved["group"] + f"nonroot:x:{NONROOT}:\n")
    try:
        yield
    finally:
        for name, text in saved.items():
            (root / "etc" / name).write_text(text)
        home.rmdir()


def _import(root: Path, tarball: Path, kind: Kind, references: Sequence[str]) -> None:
    excludes = [f"--exclude={pattern}" for pattern in (*kind.excluded, *TRIMMED_CONTENTS)]
    _run(["tar", "--create", "--file", str(tarball), "--numeric-owner", *excludes, "-C", str(root), "."])
    changes = [f"--change={change}" for change in (*kind.changes, f"LABEL {LABEL}={RECIPE}")]
    message = f"log-sidecar stand-in ({kind.name}, Debian {SUITE} minbase) for {references[0]}"
    podman("import", *changes, f"--message={message}", str(tarball), references[0], timeout=600)
    for reference in references[1:]:
        podman("tag", references[0], reference)
    tarball.unlink()


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise EngineError(f"`{' '.join(argv[:4])} ...` failed: {gist(done.stderr or done.stdout)}")
