"""Every short sequence of rotations while the sidecar is down, for a glob of the file's name and for one
matching its rotated names too: every line comes out once, in order.

While down, one to three of: lines appended (``W``), logrotate's copytruncate (``CT``), a rename rotation
and the application reopening its name (``RN``), and the file deleted (``RM``, only while it holds
nothing unread: deleting unread lines loses them for any follower). Rotated names shift up (``.1`` to
``.2``) as logrotate's do. Sequences of this matrix repeated lines (a copy holding just what we had read,
taken for a generation; a copy of a file emptied and renamed on) or lost them (a generation born and
rotated away while down, after a file found at its end).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import SidecarFactory
from tests.test_copies_between_looks import assert_every_line_once_in_order
from tests.writer import LogWriter

_STEPS = ("W", "CT", "RN", "RM")


def _nothing_unread_is_deleted(sequence: tuple[str, ...]) -> bool:
    unread = False
    for step in sequence:
        if step == "RM" and unread:
            return False
        unread = step == "W"
    return True


SEQUENCES = [s for n in (1, 2, 3) for s in itertools.product(_STEPS, repeat=n) if _nothing_unread_is_deleted(s)]


def _shift(log_dir: Path) -> None:
    for n in range(len(_STEPS) * 3, 0, -1):
        older = log_dir / f"app.log.{n}"
        if older.exists():
            os.rename(older, log_dir / f"app.log.{n + 1}")


def _apply(step: str, writer: LogWriter, log_dir: Path) -> None:
    app = log_dir / "app.log"
    if step == "W":
        writer.write(30)
    elif step == "CT":
        _shift(log_dir)
        if app.exists():
            shutil.copyfile(app, log_dir / "app.log.1")
            os.truncate(app, 0)
    elif step == "RN":
        _shift(log_dir)
        if app.exists():
            os.rename(app, log_dir / "app.log.1")
        writer.reopen()
    elif app.exists():
        writer.delete()


def _delivers_every_line_once_in_order(sequence: tuple[str, ...], glob: str, log_dir: Path,
                                       sidecar: SidecarFactory) -> None:
    """100 lines read, the sidecar stopped, ``sequence`` applied, then started and 20 lines more."""
    writer = LogWriter(log_dir / "app.log")
    writer.write(100)
    sc = sidecar(log_dir / glob)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    for step in sequence:
        _apply(step, writer, log_dir)
    sc.start()
    writer.write(20)
    assert_every_line_once_in_order(sc, writer)


@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
@pytest.mark.parametrize("sequence", SEQUENCES, ids="-".join)
def test_any_short_sequence_of_rotations_while_down_delivers_every_line_once_in_order(
        sequence: tuple[str, ...], glob: str, log_dir: Path, sidecar: SidecarFactory) -> None:
    _delivers_every_line_once_in_order(sequence, glob, log_dir, sidecar)


@pytest.mark.parametrize("sequence", [("W", "CT", "W", "RN"), ("W", "CT", "RN", "W"), ("W", "CT", "W", "RN", "W")],
                         ids="-".join)
def test_a_copy_of_a_disowned_file_found_late_in_the_scan_is_read_before_the_files_written_after_it(
        sequence: tuple[str, ...], log_dir: Path, sidecar: SidecarFactory) -> None:
    """Under ``app.log*`` the saved file, emptied by copytruncate, written again and renamed on, is found
    first (known files first) and followed as a new file; the copy holding our unread lines, met later,
    must still be read before it and before the new ``app.log`` (13 to 30 lines came out of order)."""
    _delivers_every_line_once_in_order(sequence, "app.log*", log_dir, sidecar)
