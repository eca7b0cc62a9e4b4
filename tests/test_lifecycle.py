"""Shutdown in a pod: the native sidecar stops after the app, the classic one together with it.

A native sidecar (``initContainers`` with ``restartPolicy: Always``) gets SIGTERM only once the app has
exited, so draining what is readable is enough. A classic second container gets SIGTERM at the same
moment as the app, which may still write its last lines while it shuts down: ``--drain-timeout`` keeps
the sidecar following until the files are quiet (1 s), for at most that long.

No test bounds how long an exit takes with a stopwatch: each one makes the wrong behaviour take far
longer than its wait (a file that never goes quiet, a drain timeout of a minute), so a loaded machine
cannot fail a right answer.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory
from tests.writer import BackgroundWriter, LogWriter


def test_native_sidecar_drains_what_the_app_wrote_last_and_exits_without_waiting_for_quiet(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Polling once a minute, nothing but the drain reads what the app wrote after the start, its last
    2000 lines among it. Another file never goes quiet (a sidecar that waited for quiet would never exit)."""
    app = LogWriter(log_dir / "app.log", "app")
    busy = BackgroundWriter(LogWriter(log_dir / "busy.log", "busy"), interval=0.002)
    app.write(10)
    busy.writer.write(10)  # both files exist at start: no new file is found after SIGTERM
    sc = sidecar(f"{log_dir}/*.log", "--watch", "poll", "--poll-interval", "60s")
    busy.start()
    try:
        busy.wait_written(50)
        app.write(2000, batch=True)
        before_signal = list(busy.writer.written)
        assert sc.stop(signal.SIGTERM, timeout=15) == 0
    finally:
        written = busy.stop()
    after_signal = set(written) - set(before_signal)
    assert_exactly_once(sc.output(), {"app": app.written, "busy": written}, may_lose={"busy": after_signal})


def test_classic_sidecar_keeps_reading_after_sigterm_until_the_files_are_quiet(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Lines written after the sidecar took the signal are delivered; it exits once they stop, long
    before the 60 s drain timeout."""
    background = BackgroundWriter(LogWriter(log_dir / "app.log"), interval=0.005)
    sc = sidecar(log_dir / "app.log", "--drain-timeout", "60s")
    background.start()
    try:
        background.wait_written(100)
        sc.send(signal.SIGTERM)
        sc.wait_stderr("event=stopping")
        background.wait_written(len(background.writer.written) + 100)  # the app's last words
    finally:
        written = background.stop()
    assert sc.wait(timeout=20) == 0
    assert_exactly_once(sc.output(), {"app": written})


def test_drain_timeout_bounds_the_wait_when_the_app_never_stops(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """It follows for the whole --drain-timeout, then exits although the file never went quiet; what it
    did not get to stays in the checkpoint and comes out after a restart, once."""
    drain = 1.5
    background = BackgroundWriter(LogWriter(log_dir / "app.log"), interval=0.005)
    sc = sidecar(log_dir / "app.log", "--drain-timeout", f"{drain}s")
    background.start()
    try:
        background.wait_written(50)
        signalled = time.monotonic()
        sc.send(signal.SIGTERM)
        assert sc.wait(timeout=drain + 15) == 0
        assert time.monotonic() - signalled >= drain
    finally:
        written = background.stop()
    sc.start()
    sc.wait_delivered({"app": written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": written})


def test_after_sigterm_no_new_file_is_discovered_and_the_next_start_reads_it_from_the_head(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """While the drain follows the known files (a busy one keeps it going for several polls), a file
    created after the signal is left alone: shutdown must end, and the next start has it whole."""
    busy = BackgroundWriter(LogWriter(log_dir / "a.log", "a"), interval=0.005)
    sc = sidecar(f"{log_dir}/*.log", "--drain-timeout", "60s")
    busy.start()
    try:
        busy.wait_written(50)
        sc.send(signal.SIGTERM)
        sc.wait_stderr("event=stopping")
        late = LogWriter(log_dir / "b.log", "b")
        late.write(20)
        busy.wait_written(len(busy.writer.written) + 100)  # half a second: polls and the watch saw b.log
    finally:
        written = busy.stop()
    assert sc.wait(timeout=20) == 0
    assert f"path={late.path}" not in sc.stderr(), "a file was discovered after SIGTERM"
    report = assert_exactly_once(sc.output(), {"a": written})
    assert report.foreign == 0, "lines of a file created after SIGTERM came out during the drain"
    sc.start()
    sc.wait_delivered({"b": late.written})
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"a": written, "b": late.written})
