"""``make image`` / ``make image-distroless``: build an image with podman and print its size.

``python -m images.build slim distroless`` builds ``images/Dockerfile`` as ``localhost/log-sidecar:dev`` and
``images/Dockerfile.distroless`` as ``localhost/log-sidecar:dev-distroless``, first making any base image
of either that is not local (see :mod:`images.standin`). Cached layers are reused, so a second build of an unchanged
tree takes seconds. The size printed is uncompressed: the whole image, and the part our layers add to the
base (the part that does not depend on which base, real or stand-in, the image was built on).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from images.engine import Build, EngineError, check_engine, image_size
from images.standin import base_references, ensure_bases, qualified

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
#: Where each build's podman output is kept (the last build of each variant), for when one fails.
LOGS = Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True)
class Variant:
    """One of the two images: its Dockerfile and the tag ``make`` gives it."""

    name: str
    dockerfile: Path
    tag: str

    @property
    def base(self) -> str:
        """The final stage's base image, fully qualified."""
        return qualified(base_references(self.dockerfile)[-1])


VARIANTS = {
    "slim": Variant("slim", ROOT / "images" / "Dockerfile", "localhost/log-sidecar:dev"),
    "distroless": Variant(
        "distroless", ROOT / "images" / "Dockerfile.distroless", "localhost/log-sidecar:dev-distroless"
    ),
}


@dataclass(frozen=True, slots=True)
class Built:
    """A finished build: the image id and what it weighs."""

    variant: Variant
    image_id: str
    size: int
    base_size: int
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.variant.tag}: {self.size / MB:.1f} MB uncompressed "
            f"({self.variant.base} {self.base_size / MB:.1f} MB + ours {(self.size - self.base_size) / MB:.1f} MB), "
            f"built in {self.seconds:.0f} s"
        )


def version() -> str:
    """The package version, from ``pyproject.toml`` (the image's ``VERSION`` label)."""
    project: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["version"]


def revision() -> str:
    """The commit being built, or ``unknown`` outside a git checkout."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def build(variant: Variant) -> Built:
    """Make missing bases, build the variant (reusing cached layers) and measure it."""
    started = time.monotonic()
    check_engine()
    ensure_bases(v.dockerfile for v in VARIANTS.values())  # one debootstrap serves every stand-in
    job = Build(variant.dockerfile, variant.tag, ROOT, {"VERSION": version(), "REVISION": revision()})
    with tempfile.TemporaryDirectory(prefix="log-sidecar-build-") as work:
        image_id = job.run(Path(work) / "iid", LOGS / f"log-sidecar-build-{variant.name}.log")
    return Built(variant, image_id, image_size(image_id), image_size(variant.base), time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.build", description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS), help="which images to build")
    args = parser.parse_args(argv)
    for name in args.variants:
        try:
            print(build(VARIANTS[name]).summary(), flush=True)
        except EngineError as exc:
            print(f"make image: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
