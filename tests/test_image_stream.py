"""The built images in stream mode, run as a pod runs them: every line once, through rotations and a restart.

Each variant runs with a read-only root filesystem, its own non-root user, every capability dropped,
no network, the app's log directory mounted read-only and a writable checkpoint volume. The app writes
on the host and rotates both ways (rename, copytruncate) into the mounted directory; the container's
stdout must hold every line exactly once, byte for byte; ``podman stop`` must drain, checkpoint and exit
0 — with ``--drain-timeout`` (the classic-container form) it takes lines written after the SIGTERM too;
a new container on the same volume must repeat nothing.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sidecar
from images.build import VARIANTS, version
from images.constraints import CONSTRAINTS, normalise, pins
from images.engine import Container, image_label, run_to_end
from tests.checker import assert_exactly_once
from tests.conftest import read_state
from tests.containers import BUILD_TIMEOUT, FAST_ENV, IMAGE_UID, LOG_MOUNT, ContainerSidecar, built, pod_dirs
from tests.writer import LogWriter

pytestmark = [pytest.mark.timeout(BUILD_TIMEOUT), pytest.mark.parametrize("variant", sorted(VARIANTS))]

INSTALLED = """
import importlib.metadata as m, json, re
requires = [re.split("[ ;<>=!~]", r)[0] for r in m.requires("log-sidecar") or [] if "extra ==" not in r]
print(json.dumps({"requires": requires, "installed": {d.metadata["Name"]: d.version for d in m.distributions()}}))
"""
PROBE = "import sys, urllib.request as u; print(*(u.urlopen('http://127.0.0.1:9433' + p).status for p in sys.argv[1:]))"


def stream_container(variant: str, tmp_path: Path, log_dir: Path, checkpoint_dir: Path) -> ContainerSidecar:
    env = {"SIDECAR_PATHS": f"{LOG_MOUNT}/*.log", "SIDECAR_DRAIN_TIMEOUT": "30s", **FAST_ENV}
    return ContainerSidecar(
        tmp_path / "container", built(variant).image_id, "none", env, pod_dirs(log_dir, checkpoint_dir)
    )


def test_image_streams_every_line_once_through_rotations_stop_and_restart(
    variant: str, tmp_path: Path, log_dir: Path, checkpoint_dir: Path
) -> None:
    container = stream_container(variant, tmp_path, log_dir, checkpoint_dir)
    writer = LogWriter(log_dir / "app.log")
    writer.write(400)
    try:
        container.start(ready=False)
        container.wait_ready(timeout=60)
        container.wait_delivered({"app": writer.written}, timeout=30)
        writer.rename_rotate(log_dir / "app.log.1", late_lines=50)
        writer.write(300, batch=False)
        writer.copytruncate(log_dir / "app.log.2")
        writer.write(300)
        container.wait_delivered({"app": writer.written}, timeout=30)
        assert container.exec("python3", "-c", PROBE, "/healthz", "/readyz") == "200 200\n"
        with ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(container.stop_container)
            container.wait_stderr("event=stopping", timeout=60)
            writer.write(300)  # after SIGTERM: the drain (classic form, --drain-timeout) must still take them
            assert stopping.result(timeout=120) == 0, container.stderr()
        assert_exactly_once(container.output(), {"app": writer.written}, files={"app": writer.files})
        (entry,) = [e for e in read_state(checkpoint_dir) if e["ino"] == writer.path.stat().st_ino]
        assert entry["offset"] == writer.path.stat().st_size
        assert (checkpoint_dir / "sidecar-state.json").stat().st_uid == IMAGE_UID

        writer.write(200)
        container.start(ready=False)
        container.wait_ready(timeout=60)
        container.wait_delivered({"app": writer.written}, timeout=30)
        assert container.stop_container() == 0, container.stderr()
    finally:
        container.cleanup()
    assert_exactly_once(container.output(), {"app": writer.written}, files={"app": writer.files})


def one_off(variant: str, *args: str, entrypoint: str | None = None) -> str:
    """Run the image to its end with ``args`` (no network, as locked down as the sidecar itself)."""
    name = f"log-sidecar-test-{os.getpid()}-{variant}-one-off"
    return run_to_end(Container(built(variant).image_id, name, "none", args=args, entrypoint=entrypoint))


def test_image_reports_the_package_version(variant: str) -> None:
    image = built(variant).image_id
    shown = one_off(variant, "--version")
    assert shown.split() == ["sidecar,", "version", sidecar.__version__]
    assert sidecar.__version__ == version()
    assert image_label(image, "org.opencontainers.image.version") == version()


def test_image_carries_exactly_the_pinned_dependency_versions(variant: str) -> None:
    shown = json.loads(one_off(variant, "-c", INSTALLED, entrypoint="python3"))
    installed = {normalise(name): v for name, v in shown["installed"].items()}
    pinned = pins(CONSTRAINTS.read_text())
    assert {normalise(name) for name in shown["requires"]} <= pinned.keys()
    assert {name: installed.get(name) for name in pinned} == pinned
