"""Which files are followed: globs (recursive too), excludes, --ignore-older, and directories that appear later."""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest

from sidecar.core.paths import PathsProvider
from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory
from tests.writer import LogWriter


def test_exclude_matches_the_file_name_or_with_a_slash_the_whole_path(tmp_path: Path) -> None:
    (tmp_path / "keep.log").write_text("")
    (tmp_path / "skip.log").write_text("")
    (tmp_path / "debug").mkdir()
    (tmp_path / "debug" / "x.log").write_text("")
    provider = PathsProvider((f"{tmp_path}/**/*.log",), ("skip.*", f"{tmp_path}/debug/*"))
    assert [Path(f.path).name for f in provider.scan()] == ["keep.log"]


@pytest.mark.parametrize("name", ["*.log", "app-?.log", "[ab]*.log", "*", ".*.log", "app-1.log", "*.missing"])
def test_a_scan_finds_what_glob_finds(name: str, tmp_path: Path) -> None:
    """A pattern with wildcards in its file name only is listed without ``glob``: the same paths, hidden
    names, directories, symlinks (broken ones too) and a directory that does not exist included."""
    for file in ("app-1.log", "app-2.log", "b.log", ".hidden.log", "notes.txt", "app-10.log"):
        (tmp_path / file).write_text("x\n")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "app-1.log")
    (tmp_path / "broken.log").symlink_to(tmp_path / "gone")
    for directory in (tmp_path, tmp_path / "absent"):
        pattern = f"{directory}/{name}"
        assert [f.path for f in PathsProvider((pattern,)).scan()] == sorted(glob.glob(pattern)), pattern


def test_watch_dirs_cover_the_fixed_prefix_and_every_matching_level(tmp_path: Path) -> None:
    (tmp_path / "pods" / "a" / "app").mkdir(parents=True)
    (tmp_path / "pods" / "b").mkdir()
    provider = PathsProvider((f"{tmp_path}/pods/*/app/*.log",))
    assert provider.watch_dirs() == {str(tmp_path / "pods"), str(tmp_path / "pods" / "a"),
                                     str(tmp_path / "pods" / "b"), str(tmp_path / "pods" / "a" / "app")}


def test_recursive_glob_finds_a_file_in_a_directory_created_later(log_dir: Path, sidecar: SidecarFactory) -> None:
    sc = sidecar(f"{log_dir}/**/*.log", "--poll-interval", "0.5s")
    nested = log_dir / "pod-1" / "app"
    nested.mkdir(parents=True)
    writer = LogWriter(nested / "app.log")
    writer.write(20)
    sc.wait_delivered({"app": writer.written}, timeout=15)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_excluded_files_are_never_read(log_dir: Path, sidecar: SidecarFactory) -> None:
    kept = LogWriter(log_dir / "app.log", "app")
    skipped = LogWriter(log_dir / "app.log.gz", "gz")
    sc = sidecar(f"{log_dir}/app.log*", "--exclude", "*.gz")
    kept.write(10)
    skipped.write(10)
    sc.wait_delivered({"app": kept.written})
    sc.wait_quiet(0.5)
    assert sc.stop() == 0
    report = assert_exactly_once(sc.output(), {"app": kept.written})
    assert report.foreign == 0


def test_ignore_older_skips_files_not_written_for_that_long(log_dir: Path, sidecar: SidecarFactory) -> None:
    old = LogWriter(log_dir / "old.log", "old")
    old.write(5)
    stale = time.time() - 3600
    os.utime(log_dir / "old.log", (stale, stale))
    fresh = LogWriter(log_dir / "fresh.log", "fresh")
    fresh.write(5)
    sc = sidecar(f"{log_dir}/*.log", "--ignore-older", "10m")
    sc.wait_delivered({"fresh": fresh.written})
    sc.wait_quiet(0.5)
    assert sc.stop() == 0
    report = assert_exactly_once(sc.output(), {"fresh": fresh.written})
    assert report.foreign == 0


def test_log_directory_removed_and_recreated_is_followed_again(log_dir: Path, sidecar: SidecarFactory) -> None:
    (log_dir / "pod").mkdir()
    first = LogWriter(log_dir / "pod" / "app.log", "first")
    first.write(10)
    sc = sidecar(f"{log_dir}/pod/*.log")
    sc.wait_delivered({"first": first.written})
    first.close()
    for child in (log_dir / "pod").iterdir():
        child.unlink()
    (log_dir / "pod").rmdir()
    sc.wait_stderr("kind=delete")
    (log_dir / "pod").mkdir()
    second = LogWriter(log_dir / "pod" / "app.log", "second")
    second.write(10)
    sc.wait_delivered({"first": first.written, "second": second.written}, timeout=15)
    assert sc.stop() == 0
    assert "Traceback" not in sc.stderr()
    assert_exactly_once(sc.output(), {"first": first.written, "second": second.written})
