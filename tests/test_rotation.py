"""Rotation while the sidecar runs: every line of every generation out exactly once, byte for byte.

Each test drives the real ``sidecar stream`` against files an application-like :class:`LogWriter`
writes and rotates, then counts lost, duplicated and corrupted lines with :func:`check`. These are the
field-notes scenarios where Fluent Bit, Vector and ``tail -F`` lose or repeat lines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory, wait_for_checkpoint
from tests.writer import LogWriter


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_rename_rotation_with_late_writes_to_old_file_loses_nothing(
    watch: str, log_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app, "--watch", watch)
    sc.wait_for_lines(100)
    for generation in range(1, 6):
        writer.write(40, batch=False)
        writer.rename_rotate(log_dir / f"app.log.{generation}", late_lines=25)
        writer.write(10)
    sc.wait_for_lines(len(writer.written))
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


@pytest.mark.parametrize(("watch", "poll"), [("auto", "5s"), ("poll", "0.1s")])
def test_generations_created_and_renamed_away_while_the_sidecar_is_stopped_are_found_by_identity(
    watch: str, poll: str, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Fifty rotations, two at a time while the sidecar is SIGSTOPped: the middle generation of each pair
    was never at ``app.log`` while the sidecar looked, so only the search beside the file can find it."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(10)
    sc = sidecar(app, "--watch", watch, "--poll-interval", poll)
    sc.wait_for_lines(10)
    generation = 0
    for pair in range(1, 26):
        sc.pause()
        for _ in range(2):
            generation += 1
            writer.write(20)
            writer.rename_rotate(log_dir / f"app.log.{generation}")
        writer.write(5)
        sc.resume()
        sc.wait_delivered({"app": writer.written}, timeout=15)
        found = sc.stderr().count("event=generation_found")
        assert found >= pair, f"{found} generations found by the search after {pair} stopped pairs"
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_glob_matching_rotated_names_reads_each_line_once_across_restart(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """``app.log*`` also matches ``app.log.1``..: a renamed file is the same file, not a new one."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(50)
    sc = sidecar(f"{log_dir}/app.log*")
    sc.wait_for_lines(50)
    for _ in range(5):
        writer.write(30)
        for older in sorted(log_dir.glob("app.log.*"), key=lambda p: -int(p.suffix[1:])):
            older.rename(log_dir / f"app.log.{int(older.suffix[1:]) + 1}")
        writer.rename_rotate(log_dir / "app.log.1", late_lines=5)
        writer.write(7)
    sc.wait_for_lines(len(writer.written))
    assert sc.restart() == 0
    writer.write(3)
    sc.wait_for_lines(len(writer.written))
    sc.wait_quiet()
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_new_file_is_found_by_the_directory_watch_and_read_from_byte_zero(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """The poll (60 s) cannot find it within the wait; ``--read-from tail`` applies only to files at start."""
    first = LogWriter(log_dir / "a.log", "a")
    first.write(5)
    sc = sidecar(f"{log_dir}/*.log", "--poll-interval", "60s", "--read-from", "tail")
    wait_for_checkpoint(checkpoint_dir, log_dir / "a.log", (log_dir / "a.log").stat().st_size)
    late = LogWriter(log_dir / "b.log", "b")
    late.write(3)
    sc.wait_for_lines(3, timeout=20)
    assert sc.stop() == 0
    report = assert_exactly_once(sc.output(), {"b": late.written})
    assert report.foreign == 0, "a.log existed at first start with --read-from tail: its lines are skipped"


@pytest.mark.parametrize(("lines", "partial"), [(0, 10), (3, 10), (3, 30), (3, 200)])
def test_copytruncate_after_a_partial_line_was_read_resumes_the_copy_before_it(
    lines: int, partial: int, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: the copy is read from the start of the partial line the sidecar held, checked by
    the bytes before that point, not by those before the end of what it had read (a marker reaching before
    the file's first byte made the read fail, and the copy then held back every newer file of its family)."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(lines)
    sc = sidecar(app)
    sc.wait_for_lines(lines)
    writer.write_partial(partial)
    time.sleep(0.3)  # read, and held as a partial line
    writer.finish_partial()
    sc.pause()
    writer.copytruncate(log_dir / "app.log.1")
    writer.write(20)
    sc.resume()
    sc.wait_for_lines(lines + 21)
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert "file_error" not in sc.stderr()
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_truncate_in_place_after_read_restarts_at_zero(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(200)
    sc = sidecar(app)
    sc.wait_for_lines(200)
    writer.truncate()
    writer.write(20)
    sc.wait_for_lines(220)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_truncate_then_regrow_past_old_offset_while_paused_is_read_from_zero(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """The sidecar never sees the file shrink, only a different head: it must not resume mid-content."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(20)
    sc = sidecar(app)
    sc.wait_for_lines(20)
    size = app.stat().st_size
    sc.pause()
    writer.truncate()
    writer.write(100)
    assert app.stat().st_size > size
    sc.resume()
    sc.wait_for_lines(120)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_delete_with_unread_data_drains_the_open_file(watch: str, log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app, "--watch", watch)
    sc.wait_for_lines(100)
    sc.pause()
    writer.write(300)
    writer.delete()
    sc.resume()
    sc.wait_for_lines(400)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_delete_and_recreate_reads_every_generation_when_the_inode_comes_back(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """ext4 gives a freed inode to the next file created: once the sidecar let go of a deleted file, the
    recreated one has its inode. Across a restart the state file still holds that inode at its old
    offset, so only the head fingerprint can tell that the file is new and must be read from 0. (Another
    process on the machine may take the freed inode first: each case is tried until it happened.)"""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(10)
    sc = sidecar(app, "--rotate-wait", "0.3s")
    sc.wait_for_lines(10)
    reused_while_running = 0
    for _ in range(5):
        writer.write(15)
        sc.wait_delivered({"app": writer.written})
        old = identity(app)
        writer.delete()
        sc.wait_let_go(old)
        writer.write(5)
        reused_while_running += identity(app) == old
    assert reused_while_running, "the recreated file never got the deleted file's inode back"
    for _ in range(10):
        sc.wait_delivered({"app": writer.written})
        assert sc.stop() == 0
        left_at, old = app.stat().st_size, identity(app)
        writer.delete()  # while the sidecar is down: nothing holds the inode, and the state file has it
        writer.write(40)  # longer than where the state file left the old file
        sc.start()
        if identity(app) == old and app.stat().st_size > left_at:
            break
    else:
        raise AssertionError("the recreated file never got the inode back across a restart in 10 tries")
    sc.wait_delivered({"app": writer.written})
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_symlink_swapped_to_new_target_finishes_the_old_one(tmp_path: Path, sidecar: SidecarFactory) -> None:
    """kubelet style: ``containers/app.log`` points at ``pods/.../0.log``, then at ``1.log``."""
    pods = tmp_path / "pods" / "ns_app_uid" / "app"
    containers = tmp_path / "containers"
    pods.mkdir(parents=True)
    containers.mkdir()
    link = containers / "app_ns_app-0123.log"
    old = LogWriter(pods / "0.log", "old")
    old.write(100)
    link.symlink_to(pods / "0.log")
    sc = sidecar(f"{containers}/*.log")
    sc.wait_for_lines(100)
    new = LogWriter(pods / "1.log", "new")
    new.write(10)
    swap = containers / ".swap.tmp"
    swap.symlink_to(pods / "1.log")
    os.replace(swap, link)
    old.write(50, batch=False)  # the old container's last words, after the link moved on
    new.write(90)
    sc.wait_for_lines(250)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"old": old.written, "new": new.written})


def test_hundreds_of_files_each_keep_their_own_position(log_dir: Path, sidecar: SidecarFactory) -> None:
    writers = [LogWriter(log_dir / f"f{i:03d}.log", f"f{i:03d}") for i in range(300)]
    for w in writers:
        w.write(3)
    sc = sidecar(f"{log_dir}/*.log")
    sc.wait_for_lines(900, timeout=15)
    for w in writers[::2]:
        w.write(2)
    sc.wait_for_lines(1200, timeout=15)
    assert sc.restart() == 0
    for w in writers:
        w.write(1)
    sc.wait_for_lines(1500, timeout=15)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {w.stream: w.written for w in writers})


def test_unopenable_matches_never_stall_the_other_files(log_dir: Path, sidecar: SidecarFactory) -> None:
    """Tests run as root, so chmod cannot deny a read: use what no one can read as a file."""
    os.mkfifo(log_dir / "fifo.log")  # opening it for reading would block forever
    (log_dir / "dir.log").mkdir()
    (log_dir / "dangling.log").symlink_to(log_dir / "nowhere")
    (log_dir / "loop.log").symlink_to(log_dir / "loop.log")  # ELOOP on open
    good = LogWriter(log_dir / "good.log", "good")
    good.write(50)
    sc = sidecar(f"{log_dir}/*.log")
    sc.wait_for_lines(50)
    good.write(50)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"good": good.written})
