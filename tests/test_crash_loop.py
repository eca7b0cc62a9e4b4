"""Lives shorter than ``--checkpoint-interval``: SIGKILL (OOM kill, failed probe, node pressure) soon after start.

A sidecar in a crash loop, or killed while catching up with a backlog, must still save what it
delivered: otherwise every start repeats everything since the last checkpoint any life managed to
write, which grows with each kill. A checkpoint written soon after the reader catches up, and whenever
committed progress is older than a short bound, keeps the repeats of each kill to well under a second
of the application's lines. The checkpoint interval is the documented default (1 s) throughout, so no
life here lasts one.

Each kill waits until the lines written before that start are out, plus a moment: so a loaded machine
delays the kill rather than making a correct sidecar look wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.writer import BackgroundWriter, LogWriter

INTERVAL = ("--checkpoint-interval", "1s")


def kill_young(sc: SidecarProcess, backlog: dict[str, list[int]], life: float, after_catch_up: float) -> None:
    """Start, and SIGKILL ``life`` seconds after the start (or ``after_catch_up`` after ``backlog`` is out)."""
    sc.start()
    started = time.monotonic()
    sc.wait_delivered(backlog, timeout=15)
    caught_up = time.monotonic()
    time.sleep(max(started + life, caught_up + after_catch_up) - time.monotonic())
    sc.kill()


def repeats_of(output: bytes, expected: dict[str, list[int]]) -> tuple[int, str]:
    """How many extra copies of expected lines came out; and the report, failing on loss or corruption."""
    report = check(output, expected, may_duplicate=expected)
    assert report.ok, report.summary()
    return sum(report.counts.values()) - report.delivered, report.summary()


def test_sigkill_soon_after_each_start_with_a_backlog_repeats_under_a_second_of_lines(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Four lives of ~0.6 s; before each, 18,000 lines of backlog land in ``bulk.log``; ``app.log`` grows steadily."""
    steady = BackgroundWriter(LogWriter(log_dir / "app.log", "app"), interval=0.001, per_write=4)
    bulk = LogWriter(log_dir / "bulk.log", "bulk")
    sc = sidecar(f"{log_dir}/*.log", *INTERVAL, start=False)
    began = time.monotonic()
    steady.start()
    kills = 4
    for _ in range(kills):
        bulk.write(18_000)
        kill_young(sc, {"bulk": list(bulk.written), "app": list(steady.writer.written)}, 0.6, 0.5)
    steady_written = steady.stop()
    rate = len(steady_written) / (time.monotonic() - began)
    expected = {"app": steady_written, "bulk": bulk.written}
    sc.start()
    sc.wait_delivered(expected, timeout=15)
    assert sc.stop() == 0
    repeated, summary = repeats_of(sc.output(), expected)
    written = len(steady_written) + len(bulk.written)
    bound = kills * rate * 1.0
    assert repeated <= bound, (
        f"{repeated} lines repeated over {kills} kills (bound {bound:.0f}: 1 s at {rate:.0f} lines/s per kill) "
        f"of {written} written; {summary}"
    )


def test_crash_loop_killed_half_a_second_after_every_start_repeats_under_a_second_per_kill(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Six lives of ~0.5 s while the application writes ~8,000 lines/s."""
    app = BackgroundWriter(LogWriter(log_dir / "app.log", "app"), interval=0.001, per_write=10)
    sc = sidecar(log_dir / "app.log", *INTERVAL, start=False)
    began = time.monotonic()
    app.start()
    kills = 6
    for _ in range(kills):
        kill_young(sc, {"app": list(app.writer.written)}, 0.5, 0.3)
    written = app.stop()
    rate = len(written) / (time.monotonic() - began)
    sc.start()
    sc.wait_delivered({"app": written}, timeout=15)
    assert sc.stop() == 0
    repeated, summary = repeats_of(sc.output(), {"app": written})
    bound = kills * rate * 1.0
    assert repeated <= bound, (
        f"{repeated} lines repeated over {kills} kills (bound {bound:.0f}: 1 s at {rate:.0f} lines/s per kill) "
        f"of {len(written)} written; {summary}"
    )
