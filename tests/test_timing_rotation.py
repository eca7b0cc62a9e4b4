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

import datetime
import itertools
import time
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.writer import LogWriter

BUSY_STDOUT = 30_000_000
"""Bytes per second our stdout is read at while a test keeps the sidecar busy: a third of what it can read."""
STALLED_TRIES = 4
"""Tries of a burst whose sidecar the machine did not run for a generation's life (see :func:`run_burst`)."""
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


def burst(writer: LogWriter, rotations: int, lines: int, keep: int, gap: float, style: str) -> list[float]:
    """``rotations`` times: ``lines`` lines, a rotation, a pause of ``gap`` seconds; returns when each
    rotation began (wall clock)."""
    began = []
    for number in range(1, rotations + 1):
        writer.write(lines)
        began.append(time.time())
        rotate_keeping(writer, number, keep, style)
        time.sleep(gap)
    writer.write(lines)
    return began


def longest_stall(stderr: str, directory: Path, since: float, until: float) -> float:
    """The longest time between ``since`` and ``until`` in which the sidecar said nothing of the files in
    ``directory``: during a burst it opens or lets go of a generation at every rotation."""
    times = [since, until]
    for line in stderr.splitlines():
        if str(directory) in line and line.startswith("ts="):
            stamp = datetime.datetime.fromisoformat(line[3:].split(" ", 1)[0].replace("Z", "+00:00")).timestamp()
            if since < stamp < until:
                times.append(stamp)
    times.sort()
    return max(later - earlier for earlier, later in itertools.pairwise(times))


def run_burst(
    log_dir: Path, sidecar: SidecarFactory, rotations: int, lines: int, keep: int, gap: float, style: str
) -> None:
    """The burst in ``app.log`` while the sidecar catches up with ``access.log``'s backlog.

    A generation lives ``keep`` rotations. When the machine does not run the sidecar for that long (a
    loaded CI machine, a virtual machine whose CPU is taken: both seen here, the sidecar silent for 8 ms
    while generations lived 5), a generation can be created and deleted before anybody could open it: a
    try whose sidecar said nothing of the files for a whole generation's life measures the machine, and
    is made again (at most :data:`STALLED_TRIES` times). Any other loss, repeat or misorder fails at once.
    """
    for attempt in range(STALLED_TRIES):
        directory = log_dir / f"try-{attempt}"
        directory.mkdir()
        writer = LogWriter(directory / "app.log")
        writer.write(10)
        access = LogWriter(directory / "access.log", "access")
        sc = busy_sidecar(sidecar, f"{directory}/*.log", "--checkpoint-dir", log_dir / f"state-{attempt}")
        sc.wait_for_lines(10)
        access.write(BACKLOG)
        began = burst(writer, rotations, lines, keep, gap, style)
        ended = time.time()
        sc.stdout_rate = None
        expected = {"app": writer.written, "access": access.written}
        sc.settle(expected)
        assert sc.stop() == 0
        report = check(sc.output(), expected)
        if report.ok:
            return
        lives = keep if style == "numbered" else keep + 1  # rotations from a generation's birth to its deletion
        life = min(later - earlier for earlier, later in zip(began, began[lives:], strict=False))
        stall = longest_stall(sc.stderr(), directory, began[0], ended)
        summary = f"{report.summary()} (of {len(writer.written)} written, {rotations} rotations, {keep} kept)"
        assert stall >= life, summary
        print(f"try {attempt}: the sidecar was silent {stall * 1000:.1f} ms, a generation lived "
              f"{life * 1000:.1f} ms: {summary}")
    pytest.fail(f"in each of {STALLED_TRIES} tries the machine did not run the sidecar for a generation's life")


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
