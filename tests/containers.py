"""The images, built once per test session, and run the way a locked-down pod runs them.

:func:`built` builds a variant the first time a test asks (``make image``'s code: stand-in bases when
needed, cached layers) and remembers the outcome, a failure too: when podman cannot build or start at
all, every image test fails with the same one line saying why, and the rest of the suite runs on.

:class:`ContainerSidecar` is :class:`tests.conftest.SidecarProcess` with ``podman run`` in the foreground
as its command: its stdout is the container's stdout, its exit code the container's, so the waits and
checks written for the CLI work unchanged. It is stopped as the kubelet stops a container
(``podman stop``: SIGTERM to PID 1), and removed at teardown whatever happened.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from images.build import VARIANTS, Built, build
from images.engine import Container, EngineError, Mount, Network, execute, remove, stop
from tests.conftest import SidecarProcess

#: The image's non-root user (``USER 65532:65532`` in both Dockerfiles).
IMAGE_UID = 65532
LOG_MOUNT = "/logs"
CHECKPOINT_MOUNT = "/var/lib/sidecar"
#: A cold build on a new machine makes the stand-in bases first (debootstrap): minutes, once.
BUILD_TIMEOUT = 1500
#: The tests' fast timings, as environment variables (what a pod sets).
FAST_ENV = {
    "SIDECAR_POLL_INTERVAL": "0.2s",
    "SIDECAR_ROTATE_WAIT": "1s",
    "SIDECAR_CHECKPOINT_INTERVAL": "0.2s",
}

_outcomes: dict[str, Built | EngineError] = {}
_names = itertools.count()


def built(variant: str) -> Built:
    """The variant's image, built on first use in this session; a failed build fails the test in one line."""
    if variant not in _outcomes:
        try:
            _outcomes[variant] = build(VARIANTS[variant])
        except EngineError as exc:
            _outcomes[variant] = exc
    outcome = _outcomes[variant]
    if isinstance(outcome, EngineError):
        pytest.fail(f"image {variant}: {outcome}", pytrace=False)
    return outcome


def pod_dirs(log_dir: Path, checkpoint_dir: Path) -> tuple[Mount, Mount]:
    """The log directory mounted read-only, and a checkpoint volume the image's user owns (an emptyDir)."""
    os.chown(checkpoint_dir, IMAGE_UID, IMAGE_UID)
    return Mount(log_dir, LOG_MOUNT, read_only=True), Mount(checkpoint_dir, CHECKPOINT_MOUNT, read_only=False)


def free_port() -> int:
    """A TCP port free on the host loopback now (for a container on the host network)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ContainerSidecar(SidecarProcess):
    """The sidecar as a container of ``image``: each :meth:`start` is a new container on the same mounts."""

    def __init__(self, workdir: Path, image: str, network: Network, env: dict[str, str], mounts: tuple[Mount, ...]):
        super().__init__(workdir, [])
        self.container = Container(image, f"log-sidecar-test-{os.getpid()}-{next(_names)}", network, env, mounts)

    @property
    def name(self) -> str:
        """The current (last started) container's name."""
        return f"{self.container.name}-{max(len(self.runs) - 1, 0)}"

    @property
    def command(self) -> list[str]:
        return replace(self.container, name=f"{self.container.name}-{len(self.runs)}").run_argv()

    def stop_container(self, grace: float = 30.0) -> int:
        """``podman stop`` (SIGTERM to PID 1, SIGKILL after ``grace``); the container's exit code."""
        stop(self.name, grace)
        return self.wait(timeout=60)

    def exec(self, *argv: str) -> str:
        """Run ``argv`` inside the running container as its user; its stdout, asserting it succeeded."""
        done = execute(self.name, *argv)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()

    def cleanup(self) -> None:
        if self.running:
            remove(self.name)
        super().cleanup()
