"""Rename rotations in bursts, with old generations deleted milliseconds after they were rotated.

An application that rotates by size under load (log4j, logback, Python's ``RotatingFileHandler``), or
logrotate run from a tight loop, renames its file every few milliseconds and keeps only a few
generations: the oldest is deleted while the sidecar may not have looked at it yet. A follower that
only looks when it gets round to it (a coalescing delay, a poll) loses every generation created and
deleted between two looks. A file opened when its create/move event arrives is still read from its
open descriptor after it is deleted, so nothing is lost. Each burst is repeated to catch the race.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory
from tests.writer import LogWriter


def rotate_keeping(writer: LogWriter, number: int, keep: int, style: str) -> None:
    """Rotate ``writer``'s file as rotation number ``number``, keeping ``keep`` generations, deleting older.

    ``numbered``: logrotate's and log4j's ``app.log.1`` .. ``app.log.<keep>``, shifted up on every rotation;
    ``dated``: a unique name per generation (``dateext``, logback's time-based rolling).
    """
    path = writer.path
    if style == "numbered":
        oldest = path.with_name(f"{path.name}.{keep}")
        if oldest.exists():
            oldest.unlink()
        for older in range(keep - 1, 0, -1):
            source = path.with_name(f"{path.name}.{older}")
            if source.exists():
                source.rename(path.with_name(f"{path.name}.{older + 1}"))
        writer.rename_rotate(path.with_name(f"{path.name}.1"))
    else:
        writer.rename_rotate(path.with_name(f"{path.name}-{number:06d}"))
        expired = path.with_name(f"{path.name}-{number - keep:06d}")
        if expired.exists():
            expired.unlink()


def burst(writer: LogWriter, rotations: int, lines: int, keep: int, gap: float, style: str) -> None:
    """``rotations`` times: ``lines`` lines, a rotation, a pause of ``gap`` seconds."""
    for number in range(1, rotations + 1):
        writer.write(lines)
        rotate_keeping(writer, number, keep, style)
        time.sleep(gap)
    writer.write(lines)


def run_burst(
    log_dir: Path, sidecar: SidecarFactory, rotations: int, lines: int, keep: int, gap: float, style: str
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(10)
    sc = sidecar(app, "--poll-interval", "1s")
    sc.wait_for_lines(10)
    burst(writer, rotations, lines, keep, gap, style)
    written = writer.written
    sc.settle({"app": written})
    assert sc.stop() == 0
    report = check(sc.output(), {"app": written})
    assert report.ok, f"{report.summary()} (of {len(written)} written, {rotations} rotations, {keep} kept)"


@pytest.mark.parametrize("round_", range(2))
@pytest.mark.parametrize("style", ["numbered", "dated"])
def test_rename_burst_with_deleted_generations_loses_nothing(
    style: str, round_: int, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """16 rotations ~2 ms apart, 1,500 lines each, 4 generations kept: each is deleted ~10 ms after its rotation."""
    run_burst(log_dir, sidecar, rotations=16, lines=1500, keep=4, gap=0.002, style=style)


@pytest.mark.parametrize("round_", range(3))
def test_rotations_deleted_within_milliseconds_while_running_lose_nothing(
    round_: int, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Issue 11 item 8: 36 renames 1 ms apart, 25 lines each, 3 generations kept."""
    run_burst(log_dir, sidecar, rotations=36, lines=25, keep=3, gap=0.001, style="numbered")
