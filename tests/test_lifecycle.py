"""Shutdown in a pod: the native sidecar stops after the app, the classic one together with it.

A native sidecar (``initContainers`` with ``restartPolicy: Always``) gets SIGTERM only once the app has
exited, so draining what is readable is enough. A classic second container gets SIGTERM at the same
moment as the app, which may still write its last lines while it shuts down: ``--drain-timeout`` keeps
the sidecar following until the files are quiet (1 s), for at most that long.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory
from tests.writer import BackgroundWriter, LogWriter


def test_native_sidecar_drains_what_the_app_wrote_last_and_exits_at_once(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    writer = LogWriter(log_dir / "app.log")
    sc = sidecar(log_dir / "app.log", "--poll-interval", "5s")
    writer.write(2000, batch=True)
    started = time.monotonic()
    assert sc.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 2.0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_classic_sidecar_keeps_reading_after_sigterm_until_the_files_are_quiet(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    background = BackgroundWriter(LogWriter(log_dir / "app.log"), interval=0.005)
    sc = sidecar(log_dir / "app.log", "--drain-timeout", "10s")
    background.start()
    background.wait_written(100)
    sc.send(signal.SIGTERM)
    time.sleep(0.8)  # the app is still writing its last lines during its own shutdown
    written = background.stop()
    stopped_writing = time.monotonic()
    assert sc.wait(timeout=10) == 0
    assert time.monotonic() - stopped_writing < 3.0, "exits about 1 s after the files went quiet"
    assert_exactly_once(sc.output(), {"app": written})


def test_drain_timeout_bounds_the_wait_when_the_app_never_stops(log_dir: Path, sidecar: SidecarFactory) -> None:
    background = BackgroundWriter(LogWriter(log_dir / "app.log"), interval=0.005)
    sc = sidecar(log_dir / "app.log", "--drain-timeout", "1.5s")
    background.start()
    background.wait_written(50)
    signalled = time.monotonic()
    sc.send(signal.SIGTERM)
    assert sc.wait(timeout=10) == 0
    waited = time.monotonic() - signalled
    written = background.stop()
    assert 1.4 < waited < 4.0
    assert_exactly_once(sc.output(), {"app": written}, may_lose={"app": set(written[-400:])})
