"""The package as PyPI would get it: ``python -m build`` makes an sdist and a wheel that ``twine check``
accepts, and the wheel, installed into a clean virtual environment at the pinned versions, runs.

The clean environment is also how we know ``images/constraints.txt`` is whole: installing with it as
constraints must end with exactly its pins installed, no more (a dependency added to ``pyproject.toml``
but not pinned) and no other versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from images.build import version
from images.constraints import CONSTRAINTS, installed, pins
from tests.checker import assert_exactly_once
from tests.conftest import FAST_DEFAULTS, SidecarProcess, with_defaults
from tests.writer import LogWriter

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Dist:
    """What ``python -m build`` made."""

    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Installed:
    """A clean virtual environment holding only the wheel and its pinned dependencies."""

    python: Path

    @property
    def sidecar(self) -> Path:
        return self.python.parent / "sidecar"


class WheelSidecar(SidecarProcess):
    """The installed ``sidecar`` script of a virtual environment, instead of ``python -m sidecar`` from the tree."""

    def __init__(self, workdir: Path, script: Path, mode: str, args: Sequence[str]) -> None:
        super().__init__(workdir, args, mode)
        self.script = script

    @property
    def command(self) -> list[str]:
        return ["env", "-u", "PYTHONPATH", str(self.script), self.mode, *self.args]


def run(*argv: str | Path) -> str:
    """Run a command without ``PYTHONPATH``: the clean environment must see the wheel, never a source tree."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Outside pytest's numbered temp dirs, which a concurrent pytest session may prune under a long fixture."""
    with tempfile.TemporaryDirectory(prefix="log-sidecar-packaging-") as work:
        yield Path(work)


@pytest.fixture(scope="module")
def dist(workdir: Path) -> Dist:
    out = workdir / "dist"
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def venv(workdir: Path, dist: Dist) -> Installed:
    home = workdir / "venv"
    run(sys.executable, "-m", "venv", home)
    python = home / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--constraint", CONSTRAINTS, dist.wheel)
    return Installed(python)


def test_build_makes_an_sdist_and_a_wheel_named_for_the_version(dist: Dist) -> None:
    assert dist.sdist.name == f"log_sidecar-{version()}.tar.gz"
    assert dist.wheel.name == f"log_sidecar-{version()}-py3-none-any.whl"


def test_twine_check_passes_both(dist: Dist) -> None:
    shown = run(sys.executable, "-m", "twine", "check", "--strict", dist.sdist, dist.wheel)
    assert shown.count("PASSED") == 2, shown


def test_wheel_holds_the_package_and_its_type_marker_only(dist: Dist) -> None:
    names = zipfile.ZipFile(dist.wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names if not name.startswith("log_sidecar-")}
    assert packages == {"sidecar"}
    assert "sidecar/py.typed" in names
    assert "sidecar/cli.py" in names


def test_sdist_carries_the_sources_the_wheel_is_built_from(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "sidecar/cli.py", "sidecar/py.typed"} <= names


def test_installed_wheel_reports_the_version(venv: Installed) -> None:
    assert run(venv.sidecar, "--version").split() == ["sidecar,", "version", version()]


def test_installed_wheel_streams_a_log_file(venv: Installed, tmp_path: Path) -> None:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    state.mkdir()
    writer = LogWriter(logs / "app.log")
    writer.write(500)
    args = with_defaults([str(logs / "*.log")], {"--checkpoint-dir": str(state), **FAST_DEFAULTS})
    process = WheelSidecar(tmp_path / "run", venv.sidecar, "stream", args)
    try:
        process.start()
        process.wait_delivered({"app": writer.written})
        writer.write(100, batch=False)
        process.wait_delivered({"app": writer.written})
        assert process.stop() == 0, process.stderr()
    finally:
        process.cleanup()
    assert_exactly_once(process.output(), {"app": writer.written}, files={"app": writer.files})


def test_constraints_pin_exactly_what_the_wheel_installs(venv: Installed) -> None:
    assert installed(venv.python) == pins(CONSTRAINTS.read_text()), (
        "images/constraints.txt disagrees with pyproject.toml: refresh it with `python -m images.constraints`"
    )
