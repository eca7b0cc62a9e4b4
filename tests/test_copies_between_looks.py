"""copytruncate between two of our looks, with a glob that matches the copies (``app.log*``).

The copies are found by the glob before the truncation of the file is noticed. The oldest copy holds what
we were reading (everything, if we had read nothing yet), the newer ones hold content born since, and the
file itself holds the newest: read in that order, each once, whatever finds them first (a poll, or the names
reported once we run again).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.test_logrotate import logrotate
from tests.writer import LogWriter


def assert_every_line_once_in_order(sc: SidecarProcess, writer: LogWriter) -> None:
    """Once the sidecar delivered every line ``writer`` wrote, stop it and check each came out once, in order."""
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, f"{report.summary()}\n{sc.stderr()}"


@pytest.mark.parametrize("watch", ["poll", "inotify"])
@pytest.mark.parametrize(("read_first", "copies"), [(300, 2), (300, 3), (0, 1), (0, 2)])
def test_copies_found_by_the_glob_before_the_truncation_are_read_oldest_first_before_the_new_content(
    watch: str, read_first: int, copies: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.reopen()
    writer.write(read_first)
    sc = sidecar(log_dir / "app.log*", "--watch", watch)
    inode = app.stat().st_ino
    sc.wait_for(lambda out: out.count(b"\n") >= read_first and any(ino == inode for _, ino in sc.open_files()),
                "app.log open and read")
    sc.pause()
    for _ in range(copies):
        writer.write(500)
        logrotate(tmp_path, app, "    copytruncate")
    writer.write(50)
    sc.resume()
    assert_every_line_once_in_order(sc, writer)


@pytest.mark.parametrize("watch", ["poll", "inotify"])
def test_a_copy_of_what_came_after_a_truncate_we_did_not_see_is_read_before_the_new_content(
    watch: str, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Truncated (nothing lost: we had read it all), written, copytruncated, written, all between two looks:
    no copy holds what we knew, and the copy holds lines older than the file's."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(300)
    sc = sidecar(log_dir / "app.log*", "--watch", watch)
    sc.wait_for_lines(300)
    sc.pause()
    os.truncate(app, 0)
    writer.write(12_000)  # over a read chunk: a copy read alongside the file would interleave with it
    logrotate(tmp_path, app, "    copytruncate")
    writer.write(50)
    sc.resume()
    assert_every_line_once_in_order(sc, writer)


@pytest.mark.parametrize("watch", ["poll", "inotify"])
@pytest.mark.parametrize("copies", [1, 2])
def test_a_new_file_and_its_copy_first_seen_in_one_look_are_read_oldest_first(
    watch: str, copies: int, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """The file did not exist when we started; it was created, written and copytruncated (``rotate 1``)
    before our first look at it. The copy beside it, found in the same look and no newer, holds its older
    lines: it is read first (before: after the file's newer lines, torture seed 5040)."""
    app = log_dir / "app.log"
    sc = sidecar(log_dir / "app.log*", "--watch", watch)
    sc.pause()
    writer = LogWriter(app)
    for _ in range(copies):
        writer.write(82)
        logrotate(tmp_path, app, "    copytruncate", keep=1)
    writer.write(82)
    sc.resume()
    expected = {"app": writer.written[-82 * 2:]}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, f"{report.summary()}\n{sc.stderr()}"
