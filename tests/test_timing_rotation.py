"""Rename rotations in bursts, with old generations deleted milliseconds after they were rotated.

An application that rotates by size under load (log4j, logback, Python's ``RotatingFileHandler``), or
logrotate run from a tight loop, renames its file every few milliseconds and keeps only a few
generations: the oldest is deleted while the sidecar may not have looked at it yet. A follower that
only looks when it gets round to it (between reads, after a coalescing delay, at a poll) loses every
generation created and deleted between two looks, and it looks least when it is busy: here it is
catching up with another file's backlog behind a stdout read slower than it reads (a node agent under
load). A file opened when its create/move event arrives is still read from its open descriptor after
it is deleted, so nothing is lost. Each burst is repeated to catch the race.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.writer import LogWriter

BUSY_STDOUT = 30_000_000
"""Bytes per second our stdout is read at while a test keeps the sidecar busy: a third of what it can read."""
BACKLOG = 30_000
"""Lines (~3 MB) of another file's backlog that keep the sidecar busy through a burst behind :data:`BUSY_STDOUT`."""


def busy_sidecar(sidecar: SidecarFactory, *args: str | Path) -> SidecarProcess:
    """A sidecar (polling at the default 1 s) whose stdout is read at :data:`BUSY_STDOUT`."""
    sc = sidecar(*args, "--poll-interval", "1s", start=False)
    sc.stdout_rate = BUSY_STDOUT
    return sc.start()


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
    """The burst in ``app.log`` while the sidecar catches up with ``access.log``'s backlog."""
    writer = LogWriter(log_dir / "app.log")
    writer.write(10)
    access = LogWriter(log_dir / "access.log", "access")
    sc = busy_sidecar(sidecar, f"{log_dir}/*.log")
    sc.wait_for_lines(10)
    access.write(BACKLOG)
    burst(writer, rotations, lines, keep, gap, style)
    sc.stdout_rate = None
    expected = {"app": writer.written, "access": access.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, f"{report.summary()} (of {len(writer.written)} written, {rotations} rotations, {keep} kept)"


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
