"""logrotate ``copytruncate`` several times while the sidecar is stopped (SIGSTOP, as CPU throttling does).

When the sidecar looks again, the file may be empty or short, its content since our last look having
moved into copies beside it (``app.log.1`` .. ``app.log.N``, shifted by each run). None of those bytes
is lost: they are in the copies. The copy of what we were reading is the one whose head begins with
every byte we knew of the file; the other copies hold content we never saw, born since our last look,
and are read whole, oldest first. This must hold however little we knew: nothing at all (the file was
empty when last read), or a few hundred lines.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.test_logrotate import logrotate
from tests.writer import LogWriter


def _copytruncated_while_stopped(sc: SidecarProcess, writer: LogWriter, tmp_path: Path) -> str:
    """SIGSTOP, five logrotate runs with 3,000 lines into the file before each, 100 lines more, then
    :func:`_resumed`."""
    sc.pause()
    for _ in range(5):
        writer.write(3000)
        logrotate(tmp_path, writer.path, "    copytruncate")
    writer.write(100)
    return _resumed(sc, writer, "5 copies")


def _resumed(sc: SidecarProcess, writer: LogWriter, what: str) -> str:
    """SIGCONT; what went wrong once the sidecar settled (``what`` was done meanwhile), or "" when every
    line came out once, in order."""
    sc.resume()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    return "" if report.ok else f"{report.summary()} (of {len(writer.written)} written, {what})\n{sc.stderr()}"


@pytest.mark.parametrize("read_first", [0, 400], ids=["empty-when-last-read", "after-reading-400-lines"])
def test_copytruncate_runs_while_stopped_lose_nothing(
    read_first: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.reopen()
    writer.write(read_first)
    sc = sidecar(app)
    if read_first:
        sc.wait_for_lines(read_first)
    inode = app.stat().st_ino
    sc.wait_for(lambda _: any(ino == inode for _, ino in sc.open_files()), "app.log open")
    failed = _copytruncated_while_stopped(sc, writer, tmp_path)
    assert not failed, failed


@pytest.mark.parametrize("round_", range(8))
def test_copytruncate_runs_while_stopped_the_moment_the_file_was_opened_lose_nothing(
    round_: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Stopped within a millisecond of its first open of the file (in some rounds before it has started a
    tail for it, or read it): the copies made meanwhile are still ours."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.reopen()
    sc = sidecar(app)
    inode = app.stat().st_ino
    deadline = time.monotonic() + 10
    while not any(ino == inode for _, ino in sc.open_files()):
        assert time.monotonic() < deadline, f"app.log never opened\n{sc.stderr()}"
        time.sleep(0.0002)
    failed = _copytruncated_while_stopped(sc, writer, tmp_path)
    assert not failed, f"round {round_}: {failed}"


@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
@pytest.mark.parametrize(("keep", "runs"), [(1, 2), (2, 3), (3, 4)])
def test_copytruncate_runs_while_stopped_that_delete_the_copy_of_what_was_read_lose_nothing(
    glob: str, keep: int, runs: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """``rotate N`` with more runs than N while we are stopped deletes the oldest copy, the one that began
    with every byte we had read: no copy left begins with what we know, yet all of them hold content born
    since our last look, ours, and come before the file's new content (before: the file's truncation was
    taken for a plain one and every copy was lost, or with ``app.log*`` read after newer lines)."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(300)
    sc = sidecar(log_dir / glob)
    sc.wait_for_lines(300)
    sc.pause()
    for _ in range(runs):
        logrotate(tmp_path, app, "    copytruncate", keep=keep)
        writer.write(273)
    failed = _resumed(sc, writer, f"{runs} copies, {keep} kept")
    assert not failed, failed


@pytest.mark.parametrize("unread", [57, 0])
@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
def test_a_file_copytruncated_then_deleted_while_down_is_read_on_from_its_copy(
    glob: str, unread: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """While we are down: ``unread`` lines, logrotate's copy (``app.log.1``), then the file itself deleted. Its
    inode is gone, but the copy holds every byte we knew of it and those we had not read: it is read on from
    our position (before: skipped as the saved file's copy, by the glob and by the generation search, and the
    lines written while down were lost). A copy holding just what we had read is that file at its end
    (before: taken for a generation and read again from its first byte, all 200 lines repeated)."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(200)
    sc = sidecar(log_dir / glob)
    sc.wait_for_lines(200)
    assert sc.stop() == 0
    writer.write(unread)
    logrotate(tmp_path, app, "    copytruncate", keep=3)
    writer.close()
    app.unlink()
    _restarted_delivers_every_line_once(sc, writer)


def _restarted_delivers_every_line_once(sc: SidecarProcess, writer: LogWriter) -> None:
    """Start the stopped sidecar again: every line written comes out once, in order."""
    sc.start()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, f"{report.summary()}\n{sc.stderr()}"


def _shift(log_dir: Path, keep: int) -> None:
    """``app.log.N`` -> ``app.log.N+1``, newest last, as a numbered rotation makes room for a new ``.1``."""
    for n in range(keep, 0, -1):
        old = log_dir / f"app.log.{n}"
        if old.exists():
            old.rename(log_dir / f"app.log.{n + 1}")


@pytest.mark.parametrize("lines_after", [0, 5], ids=["new-file-empty", "new-file-written"])
def test_a_file_saved_empty_then_copytruncated_and_renamed_while_down_is_read_after_its_copy(
    lines_after: int, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """We stopped just after a rename rotation gave ``app.log`` a new, empty file: the state file knows it
    by its inode and nothing of its content. While we were down the app wrote into it, a copytruncate put
    those lines in ``app.log.1``, one more line went into it, and a rename rotation moved it to ``app.log.1``
    (its copy to ``app.log.2``). The copy holds its older lines: read before the line it holds now, whether the
    new ``app.log`` has lines yet or not (before: after it, 3,092 out of order, torture seed 7326)."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.reopen()
    writer.write(50)
    sc = sidecar(log_dir / "app.log*")
    sc.wait_for_lines(50)
    _shift(log_dir, 3)
    app.rename(log_dir / "app.log.1")
    writer.reopen()
    inode = app.stat().st_ino
    sc.wait_for(lambda _: any(ino == inode for _, ino in sc.open_files()), "the new app.log open")
    assert sc.stop() == 0
    writer.write(300)
    _shift(log_dir, 3)
    shutil.copyfile(app, log_dir / "app.log.1")
    os.truncate(app, 0)
    time.sleep(0.02)  # a tick of the file clock: the copy is older than the line written after it
    writer.write(1)
    _shift(log_dir, 3)
    app.rename(log_dir / "app.log.1")
    writer.reopen()
    writer.write(lines_after)
    _restarted_delivers_every_line_once(sc, writer)
