"""A slow stdout reader (a throttled node agent, a ``kubectl logs`` over a slow link) and what must still hold.

With stdout slower than the files grow, the reader spends its time inside a write to stdout. Then:
progress is saved as it is made, though the reader never catches up; the drain after SIGTERM still ends
at its deadline, never in the middle of a line (the pod's next container would see half a line, and the
restart the whole line again); and giving up a rotated file after ``--rotate-wait-max`` waits for the
write in progress, instead of closing the descriptor under it (EBADF taken for "stdout closed", or
another file's bytes copied out through a reused number).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.checker import check, lines_in_files
from tests.conftest import SidecarFactory, read_state
from tests.writer import BackgroundWriter, LogWriter

RATE = 1_000_000
"""Bytes per second the slow reader takes: a 1 MiB pipe and a 1 MiB read chunk take about a second."""


def test_drain_after_sigterm_ends_at_its_deadline_without_tearing_a_line(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """11 MB of backlog behind a 1 MB/s reader, the app still writing: the files never go quiet."""
    drain_timeout = 0.5
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.002, per_write=5)
    background.writer.write(100_000)
    sc = sidecar(app, "--drain-timeout", f"{drain_timeout}s", start=False)
    sc.stdout_rate = RATE
    sc.start()
    background.start()
    sc.wait_for_lines(2000)
    stopping = time.monotonic()
    sc.send(signal.SIGTERM)
    code = sc.proc.wait(timeout=20)
    took = time.monotonic() - stopping
    sc.stdout_rate = None
    sc.wait()
    first_run = sc.output()
    written = background.stop()
    parsed = check(first_run, {"app": written}, may_lose={"app": written})
    assert code == 0, sc.stderr()
    verdict = f"exit {took:.1f}s after SIGTERM with --drain-timeout {drain_timeout}s; {parsed.summary()}"
    assert (parsed.duplicated, parsed.corrupted, took < drain_timeout + 3) == ([], [], True), verdict
    sc.start()  # the rest, from the checkpoint the drain wrote
    sc.wait_delivered({"app": written}, timeout=20)
    assert sc.stop() == 0
    report = check(sc.output(), {"app": written})
    assert report.ok, report.summary()


def test_giving_up_a_rotated_file_waits_for_the_write_in_progress(log_dir: Path, sidecar: SidecarFactory) -> None:
    """``--rotate-wait-max 2s`` runs out while the rotated file is being copied to a slow stdout."""
    app = log_dir / "app.log"
    old = LogWriter(app, "old")
    old.write(100_000)
    sc = sidecar(f"{log_dir}/*.log", "--rotate-wait-max", "2s", start=False)
    sc.stdout_rate = RATE
    sc.start()
    sc.wait_for_lines(2000)
    app.rename(log_dir / "app.log.1")
    new = LogWriter(app, "new")
    new.write(200)
    time.sleep(3.5)  # the give-up came and went; more files are opened meanwhile (reusing descriptor numbers)
    extra = [LogWriter(log_dir / f"x{i}.log", f"x{i}") for i in range(3)]
    for writer in extra:
        writer.write(10)
    assert sc.running, f"the sidecar died when the rotated file was given up\n{sc.stderr()}"
    sc.stdout_rate = None
    expected = {"new": new.written} | {w.stream: w.written for w in extra}
    sc.settle(expected)
    assert sc.stop() == 0, sc.stderr()
    report = check(sc.output(), expected, may_lose={"old": lines_in_files([log_dir / "app.log.1"], "old")})
    assert report.ok, report.summary()


def test_a_catch_up_that_never_ends_saves_its_progress_as_it_goes_whatever_the_interval(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """11 MB of backlog behind a 1 MB/s reader: ~11 s in which the reader never catches up. Progress must
    be on disk within ~0.25 s of being made (a SIGKILL repeats no more), not after --checkpoint-interval."""
    app = log_dir / "app.log"
    LogWriter(app).write(100_000)
    total = app.stat().st_size
    sc = sidecar(app, "--checkpoint-interval", "60s", start=False)
    sc.stdout_rate = RATE
    sc.start()
    sc.wait_for_lines(1000)
    saved = []
    for _ in range(2):
        time.sleep(1.0)
        saved.append(max((int(str(e["offset"])) for e in read_state(checkpoint_dir)), default=0))
        read = len(sc.output())  # the pipe holds more that the kernel took (committed) and we did not read
        assert saved[-1] >= read - RATE // 2, f"saved {saved[-1]} bytes, {read} read from stdout"
    assert 0 < saved[0] < saved[1] < total, f"saved offsets {saved} while catching up {total} bytes"
