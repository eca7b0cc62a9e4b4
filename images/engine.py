"""Debian's podman, driven the one way that works on our machines and respects their network rule.

Every podman invocation of ``make image`` and of the image tests goes through here, so the flags this
kind of machine needs cannot be forgotten by a caller: builds use ``--isolation=chroot``; containers
use ``--runtime runc`` (crun refuses the kernel's cgroup mode) and explicit ``nofile``/``nproc``
ulimits. The network is a required choice between ``none`` and ``host``: the default bridge puts
traffic on private address ranges, which are off-limits here, so no call can fall back to it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Network = Literal["none", "host"]

PODMAN = "podman"
#: Flags every ``podman run`` and ``podman exec``-able container needs on this kind of machine.
RUNTIME_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
#: Long steps (a cold build downloads and compiles wheels) run below the other users of the 2 cores.
NICE = ("nice", "-n", "10")


class EngineError(RuntimeError):
    """podman is missing or failed; the message is one line naming what and why."""


def podman(*args: str, timeout: float = 120.0, nice: bool = False, log: Path | None = None) -> str:
    """Run ``podman ARGS`` and return its stdout; a failure raises :class:`EngineError` with stderr's gist.

    With ``log``, stdout and stderr also go to that file, and a failure names it (a build's full story).
    """
    if shutil.which(PODMAN) is None:
        raise EngineError("podman is not installed: run `make system-deps` (Debian's podman, buildah, runc)")
    argv = [*(NICE if nice else ()), PODMAN, *args]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"`podman {args[0]}` did not finish within {timeout:.0f} s") from exc
    if log is not None:
        log.write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        where = f" (full output: {log})" if log is not None else ""
        raise EngineError(f"`podman {' '.join(args[:2])}` failed: {gist(done.stderr)}{where}")
    return done.stdout.decode()


def gist(output: bytes) -> str:
    """The line of an error output that says why: pip's last ``ERROR:`` line, else the last line."""
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no error output"])[-1]


def check_engine() -> None:
    """Fail with one line unless podman can start containers at all (installed, storage usable)."""
    podman("info", "--format", "{{.Store.GraphDriverName}}", timeout=60)
    if shutil.which("runc") is None:
        raise EngineError("runc is not installed: run `make system-deps`")


def image_exists(reference: str) -> bool:
    """Whether ``reference`` is in the local image store (nothing is ever pulled)."""
    if shutil.which(PODMAN) is None:
        return False
    done = subprocess.run([PODMAN, "image", "exists", reference], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def image_label(reference: str, name: str) -> str | None:
    """The value of label ``name`` on a local image, or ``None`` when it has no such label."""
    value = podman("image", "inspect", "--format", f'{{{{index .Labels "{name}"}}}}', reference).strip()
    return value if value and value != "<no value>" else None


def image_size(reference: str) -> int:
    """Uncompressed size in bytes of a local image: the sum of its layers as stored."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", reference).strip())


@dataclass(frozen=True, slots=True)
class Build:
    """One ``podman build`` of a Dockerfile with the repository root as context."""

    dockerfile: Path
    tag: str
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)

    def argv(self, iidfile: Path) -> list[str]:
        # The build stages' RUN steps reach the package index, so they share the host's network (never a
        # bridge); --pull=never because no registry is reachable: the bases are local (real or stand-in).
        args = [f"--build-arg={key}={value}" for key, value in self.build_args.items()]
        return [
            "build",
            "--isolation=chroot",
            "--network=host",
            "--pull=never",
            "--layers",
            f"--iidfile={iidfile}",
            *args,
            "--file",
            str(self.dockerfile),
            "--tag",
            self.tag,
            str(self.context),
        ]

    def run(self, iidfile: Path, log: Path, timeout: float = 1200.0) -> str:
        """Build (reusing cached layers), keeping podman's output in ``log``, and return the image id."""
        podman(*self.argv(iidfile), timeout=timeout, nice=True, log=log)
        return iidfile.read_text().strip().removeprefix("sha256:")


@dataclass(frozen=True, slots=True)
class Mount:
    """A host directory bind-mounted into a container."""

    source: Path
    target: str
    read_only: bool

    def flag(self) -> str:
        return f"--volume={self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True, slots=True)
class Container:
    """A container started the way a locked-down pod runs it.

    Read-only root filesystem with no tmpfs added (``readOnlyRootFilesystem``), every capability dropped,
    no privilege escalation, the image's own user, and only the given mounts writable.
    """

    image: str
    name: str
    network: Network
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    args: Sequence[str] = ()
    entrypoint: str | None = None

    def run_argv(self) -> list[str]:
        """``podman run`` in the foreground: its stdout and stderr are the container's, its exit code too."""
        return [
            PODMAN,
            "run",
            "--rm",
            f"--name={self.name}",
            *RUNTIME_FLAGS,
            f"--network={self.network}",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            *(mount.flag() for mount in self.mounts),
            *(f"--env={key}={value}" for key, value in self.env.items()),
            *((f"--entrypoint={self.entrypoint}",) if self.entrypoint else ()),
            self.image,
            *self.args,
        ]


def run_to_end(container: Container, timeout: float = 120.0) -> str:
    """Run a container to its end (``--version``, a one-off script) and return its stdout."""
    return podman(*container.run_argv()[1:], timeout=timeout)


def stop(name: str, grace: float = 30.0) -> None:
    """``podman stop``: SIGTERM to PID 1, SIGKILL only if it is still running after ``grace`` seconds."""
    podman("stop", f"--time={grace:.0f}", name, timeout=grace + 60)


def remove(name: str) -> None:
    """Kill and remove a container if it still exists (teardown); never fails."""
    subprocess.run(
        [PODMAN, "rm", "--force", "--ignore", "--time=0", name], capture_output=True, timeout=60, check=False
    )


def execute(name: str, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` inside a running container as its user (``podman exec``); the caller checks the result."""
    return subprocess.run([PODMAN, "exec", name, *argv], capture_output=True, timeout=timeout, check=False)
