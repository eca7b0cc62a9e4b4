"""Process wiring shared by both modes: logging, limits, signals, the HTTP endpoint, and the follow loop.

A mode only says how to build its sink; everything a sidecar process must do around that — answer
probes, stop cleanly on SIGTERM, exit at once on a second signal, report errors as one line — is
done here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar import log as diagnostics
from sidecar.core.config import FollowConfig
from sidecar.core.loop import LendingLoop
from sidecar.core.server import FileServer
from sidecar.core.sink import Sink
from sidecar.errors import SidecarError
from sidecar.log import get_logger
from sidecar.observe.health import Health
from sidecar.observe.http import start_http
from sidecar.observe.metrics import Metrics

log = get_logger(__name__)

@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """What the process needs besides the core's options."""

    metrics_port: int
    metrics_address: str = "0.0.0.0"
    log_level: str = "info"
    log_format: str = "logfmt"


def runtime_options_from(params: dict[str, Any]) -> RuntimeOptions:
    """Build :class:`RuntimeOptions` from the parsed ``runtime_options``."""
    return RuntimeOptions(params["metrics_port"], params["metrics_address"], params["log_level"],
                          params["log_format"])


@dataclass(frozen=True, slots=True)
class ModeContext:
    """What a mode's sink factory may use."""

    metrics: Metrics
    health: Health
    config: FollowConfig


class Mode(Protocol):
    """A mode, as its command built it once from the options: its name, the core's and the process's
    options, and how to make its sink inside the running loop. Each mode is one typed object of this shape
    (:class:`sidecar.modes.stream.cli.StreamMode`, :class:`sidecar.modes.agent.cli.AgentMode`)."""

    @property
    def name(self) -> str: ...

    @property
    def follow(self) -> FollowConfig: ...

    @property
    def runtime(self) -> RuntimeOptions: ...

    def make_sink(self, ctx: ModeContext) -> Sink: ...


def run_mode(mode: Mode) -> int:
    """Run a mode until SIGTERM/SIGINT; return the process exit code."""
    diagnostics.setup(mode.runtime.log_level, mode.runtime.log_format)
    _raise_open_file_limit()
    try:
        with asyncio.Runner(loop_factory=LendingLoop) as runner:
            return runner.run(_main(mode))
    except SidecarError as exc:
        log.error("fatal", error=str(exc))
        return exc.exit_code


def _raise_open_file_limit() -> None:
    """Hundreds of followed files need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second_signal", signal=signal.Signals(signum).name, action="exit now")
            os._exit(128 + signum)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def _main(mode: Mode) -> int:
    config, runtime = mode.follow, mode.runtime
    stop = asyncio.Event()
    _install_signals(stop)
    metrics = Metrics(mode.name)
    health = Health()
    sink = mode.make_sink(ModeContext(metrics, health, config))
    server = FileServer(config, sink, metrics, health)
    endpoint = None
    if runtime.metrics_port:
        try:
            endpoint = await start_http(runtime.metrics_address, runtime.metrics_port, metrics.registry, health)
        except OSError as exc:
            raise SidecarError(
                f"cannot serve metrics on {runtime.metrics_address}:{runtime.metrics_port} ({exc.strerror}): "
                "choose another --metrics-port / SIDECAR_METRICS_PORT, or 0 to disable"
            ) from exc
    server.start()
    gc.freeze()  # what start-up made lives as long as we do: full collections need not walk it again
    log.info("started", mode=mode.name, paths=",".join(config.paths), files=server.open_files,
             metrics=f"http://{runtime.metrics_address}:{runtime.metrics_port}/metrics" if endpoint else "off")
    try:
        await server.run(stop)
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0
