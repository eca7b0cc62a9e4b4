"""An inode number freed when its file is gone is soon handed to another file (ext4 gives out the lowest free
one; gzip deleting last rotation's copy frees one just before logrotate's next copy takes one). A saved
position names a file by its number *and* its content: a number that now holds other content, under another
name, is that other file, whose lines are read once, where they belong.

The number is made to collide here by editing the state file while the sidecar is down: it is given the
entry of a deleted file whose inode the new file has, as the kernel does by chance.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from sidecar.core.checkpoint import CheckpointStore, Entry
from sidecar.core.config import WatchBackend
from sidecar.core.identity import Fingerprint, mark_of
from sidecar.core.server import FileServer
from tests.checker import check
from tests.conftest import SidecarFactory, state_entry
from tests.test_copies_between_looks import assert_every_line_once_in_order
from tests.test_logrotate import logrotate
from tests.test_server_inprocess import FreezingSink, _run_server
from tests.writer import LogWriter

_GONE_HEAD = b"2026-12-03T08:00:00Z a file deleted long ago, whose inode number came free\n" * 4


def _gone_file(dev: int, ino: int, name: Path, pattern: str, offset: int = 100_000, empty: bool = False) -> Entry:
    """The saved entry of a deleted file ``name`` that had inode ``ino``; ``empty``: deleted while empty, its
    fingerprint one of nothing, which every content begins with."""
    now = time.time()
    if empty:
        nothing = Fingerprint.of(b"")
        return Entry(dev, ino, nothing.digest, nothing.length, 0, str(name), pattern, now, gone_since=now - 1)
    gone = Fingerprint.of(_GONE_HEAD)
    return Entry(dev, ino, gone.digest, gone.length, offset, str(name), pattern, now, gone_since=now - 1,
                 mark=mark_of(b"x" * 64), mark_len=64)


def _give_gone_file_the_inode_of(checkpoint_dir: Path, reuser: Path, name: Path, followed: Path, empty: bool) -> None:
    store = CheckpointStore(checkpoint_dir)
    entries = store.load()
    st = reuser.stat()
    pattern = str(state_entry(checkpoint_dir, followed)["pattern"])
    store.save([*entries, _gone_file(st.st_dev, st.st_ino, name, pattern, empty=empty)])


@pytest.mark.parametrize(("gone_name", "empty"), [("app.log", False), ("app.log", True), ("app.log.1", True)],
                         ids=["deleted", "deleted-while-empty", "its-copy-deleted-while-empty"])
@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
def test_a_copy_made_while_down_in_the_inode_of_a_deleted_file_resumes_where_we_were(
    glob: str, gone_name: str, empty: bool, tmp_path: Path, log_dir: Path, checkpoint_dir: Path,
    sidecar: SidecarFactory
) -> None:
    """copytruncate while the sidecar is down; the copy's inode number is a deleted file's that the state
    file still holds. The copy is ours: read from where we stopped, not taken for the deleted file rewritten
    (which read it all again), and not skipped as known (which lost what it holds past our position). Also
    when the deleted file was empty when saved (a name rotated in and removed before its first line), whose
    fingerprint of nothing matches every file, so that the number alone decided (before: the copy was
    skipped as that file by the copy search, then read from 0 as it; torture seed 7131 under load)."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(300)
    sc = sidecar(log_dir / glob)
    sc.wait_for_lines(300)
    assert sc.stop() == 0
    writer.write(200)
    logrotate(tmp_path, app, "    copytruncate")
    writer.write(50)
    _give_gone_file_the_inode_of(checkpoint_dir, log_dir / "app.log.1", log_dir / gone_name, app, empty)
    sc.start()
    assert_every_line_once_in_order(sc, writer)
    assert "inode_reused" in sc.stderr()


def _give_copy_before_the_inode_of(checkpoint_dir: Path, copy: Path) -> None:
    """The saved entry of the copy that had ``copy``'s name gets the number of the file now there, as the
    kernel often hands it out (gzip freed it just before)."""
    store = CheckpointStore(checkpoint_dir)
    entries = store.load()
    named = [e for e in entries if e.path == str(copy)]
    assert named, f"no saved entry named {copy}: {entries}"
    named[0].ino = copy.stat().st_ino
    store.save(entries)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_copy_made_while_down_in_the_name_and_inode_of_the_copy_before_comes_before_the_files_new_content(
    stop: int, tmp_path: Path, log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """``copytruncate``, ``rotate 1``, ``compress``, ``delaycompress`` with ``app.log*``: a copy made while we
    run leaves the file empty; the next, made while we are down, takes the first copy's name and, once gzip
    freed it, its inode number. That copy holds the lines born after those we read, before the file's new
    content: its number and name are not the first copy's saved position (before: resumed there, found
    truncated and read from 0 after the newer lines, 357 out of order)."""
    app = log_dir / "app.log"
    copy = log_dir / "app.log.1"
    writer = LogWriter(app)
    writer.write(145)
    sc = sidecar(log_dir / "app.log*", "--exclude", "*.gz")
    sc.wait_for_lines(145)
    directives = "    copytruncate\n    compress\n    delaycompress"
    logrotate(tmp_path, app, directives, keep=1)
    deadline = time.monotonic() + 10
    while not any(e.path == str(copy) for e in CheckpointStore(checkpoint_dir).load()):
        assert time.monotonic() < deadline, f"the copy was never saved\n{sc.stderr()}"
        time.sleep(0.05)
    sc.stop(stop)
    writer.write(357)
    logrotate(tmp_path, app, directives, keep=1)
    writer.write(444)
    _give_copy_before_the_inode_of(checkpoint_dir, copy)
    sc.start()
    assert_every_line_once_in_order(sc, writer)


@pytest.mark.parametrize(("glob", "watch"), [("app.log", "auto"), ("app.log*", "auto"), ("app.log*", "poll")])
def test_a_copy_in_the_inode_and_name_of_a_copy_read_before_is_read_as_the_copy_while_following(
    glob: str, watch: WatchBackend, tmp_path: Path
) -> None:
    """Following: a copy we read from and closed is remembered by its inode (so that it is never read twice),
    then deleted (compressed); logrotate's next copy gets its name and its number. That copy holds what the
    truncation took from us: found as the copy, neither skipped as the file read before (lost) nor, matched by
    the glob, taken for that file rewritten in place (read again from its start)."""
    app = tmp_path / "app.log"
    writer = LogWriter(app)
    writer.write(200)

    async def body(sink: FreezingSink, server: FileServer) -> None:
        await _until_delivered(sink, writer)
        writer.write(300)
        copy = tmp_path / "app.log.1"
        copy.write_bytes(app.read_bytes())
        os.truncate(app, 0)
        st = copy.stat()
        server._registry.remember(_gone_file(st.st_dev, st.st_ino, copy, str(app)))
        writer.write(20)
        await _until_delivered(sink, writer)

    sink = _run_server(tmp_path, tmp_path / glob, body, watch)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()


async def _until_delivered(sink: FreezingSink, writer: LogWriter, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sink.out.count(b"\n") < len(writer.written) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
