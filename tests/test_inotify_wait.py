"""The inotify watcher's wait: each wait times out at its own deadline although the timer is kept from one
wait to the next, and the path kept from the event before never names a file of another directory."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sidecar.core.watch import Changes
from sidecar.core.watch.base import NameEvent
from sidecar.core.watch.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    InotifyWatcher,
    _Instance,
)


async def _timed_wait(watcher: InotifyWatcher, timeout: float) -> tuple[float, bool]:
    began = time.monotonic()
    changes = await watcher.wait(timeout)
    return time.monotonic() - began, changes.everything


@contextlib.asynccontextmanager
async def _watching(*dirs: Path) -> AsyncIterator[InotifyWatcher]:
    watcher = InotifyWatcher()
    watcher.watch({str(d) for d in dirs})
    watcher.start(lambda names: None)
    try:
        yield watcher
    finally:
        watcher.close()


def _append(path: Path, data: bytes = b"line\n") -> None:
    with path.open("ab") as out:
        out.write(data)


def test_a_wait_times_out_at_its_own_deadline_after_a_longer_wait_was_woken_early(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()

    async def scenario() -> None:
        async with _watching(tmp_path) as watcher:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, _append, log)
            took, everything = await _timed_wait(watcher, 30.0)
            assert not everything
            assert took < 5.0

            took, everything = await _timed_wait(watcher, 0.2)
            assert everything
            assert 0.15 <= took < 2.0

    asyncio.run(scenario())


def test_a_wait_woken_by_writes_again_and_again_still_times_out_when_they_stop(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()

    async def scenario() -> None:
        async with _watching(tmp_path) as watcher:
            loop = asyncio.get_running_loop()
            began = time.monotonic()
            while time.monotonic() - began < 1.5:  # the first wait's timer fires meanwhile
                loop.call_later(0.02, _append, log)
                _, everything = await _timed_wait(watcher, 0.6)
                assert not everything
            took, everything = await _timed_wait(watcher, 0.6)
            assert everything
            assert 0.55 <= took < 3.0

    asyncio.run(scenario())


def test_a_shorter_wait_than_the_one_before_is_not_held_to_the_longer_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _watching(tmp_path) as watcher:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, _append, tmp_path / "app.log")
            await _timed_wait(watcher, 60.0)
            took, everything = await _timed_wait(watcher, 0.1)
            assert everything
            assert took < 2.0

    asyncio.run(scenario())


def test_the_same_file_name_in_two_directories_is_reported_by_its_own_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "app.log").touch()

    async def scenario() -> None:
        async with _watching(first, second) as watcher:
            seen: set[str] = set()
            for directory in (first, second, first, second, second, first):
                _append(directory / "app.log")
                await asyncio.sleep(0.01)
                seen |= (await watcher.wait(5.0)).paths
            assert seen == {str(first / "app.log"), str(second / "app.log")}

    asyncio.run(scenario())


def test_a_directory_watched_again_reports_its_files_by_their_path(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()

    async def scenario() -> None:
        async with _watching(logs) as watcher:
            _append(logs / "app.log")
            assert str(logs / "app.log") in (await watcher.wait(5.0)).paths
            watcher.watch(set())
            os.rename(logs, tmp_path / "old")
            logs.mkdir()
            watcher.watch({str(logs)})
            _append(logs / "app.log")
            await asyncio.sleep(0.01)
            paths: set[str] = set()
            while str(logs / "app.log") not in paths:
                changes = await watcher.wait(5.0)
                assert not changes.everything
                paths |= changes.paths
            assert str(tmp_path / "old" / "app.log") not in paths

    asyncio.run(scenario())


Record = list[tuple[str, object]]


@contextlib.contextmanager
def _recording(directory: Path) -> Iterator[tuple[InotifyWatcher, Record]]:
    """A watcher whose callbacks note, in order, the names reported and the writes offered (all served)."""
    record: Record = []
    watcher = InotifyWatcher()
    watcher.watch({str(directory)})

    def on_data(changes: Changes) -> bool:
        record.append(("data", set(changes.paths)))
        return True

    watcher.start(lambda names: record.append(("names", [(n.path, n.change) for n in names])), on_data)
    try:
        yield watcher, record
    finally:
        watcher.close()


def _rotate_then_write(log: Path) -> tuple[str, object]:
    """Rename ``log`` away and write to it there; returns the names report that must come first."""
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)
    _append(rotated)
    return "names", [(str(log), "gone"), (str(rotated), "moved_in")]


def test_a_write_read_after_a_rename_is_offered_only_once_the_rename_was_reported(tmp_path: Path) -> None:
    """The loop may report the data descriptor before the names one. A write that came after a rename must
    not be served before the rename is known: the data instance hears of names too, and reads them first."""
    log = tmp_path / "app.log"
    log.touch()

    async def scenario() -> None:
        with _recording(tmp_path) as (watcher, record):
            waiting = asyncio.ensure_future(watcher.wait(5.0))
            await asyncio.sleep(0)
            _append(log)
            watcher._data_ready()
            assert record == [("data", {str(log)})]
            names = _rotate_then_write(log)
            watcher._data_ready()  # before the loop runs the names callback
            assert record[1:] == [names]
            assert (await waiting).structure

    asyncio.run(scenario())


def test_writes_taken_during_a_pause_after_a_rename_are_left_to_the_reader(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()

    async def scenario() -> None:
        with _recording(tmp_path) as (watcher, record):
            _append(log)
            changes = Changes()
            assert watcher.take_queued(changes)
            assert changes.paths == {str(log)}
            assert record == []
            names = _rotate_then_write(log)
            assert not watcher.take_queued(changes)
            assert record == [names]
            _append(tmp_path / "app.log.1")
            assert watcher.take_queued(changes), "names already reported are not reported again"

    asyncio.run(scenario())


def test_a_name_that_is_not_utf8_is_reported_as_a_glob_finds_it(tmp_path: Path) -> None:
    name = b"caf\xe9-\xff.log"
    path = os.path.join(os.fsencode(tmp_path), name)
    with open(path, "wb"):
        pass
    (found,) = tmp_path.glob("caf*.log")

    async def scenario() -> None:
        async with _watching(tmp_path) as watcher:
            with open(path, "ab") as out:
                out.write(b"line\n")
            await asyncio.sleep(0.01)
            assert (await watcher.wait(5.0)).paths == {str(found)}

    asyncio.run(scenario())


def test_an_overflowed_queue_asks_for_every_file_and_says_events_were_lost() -> None:
    instance = _Instance(ctypes.CDLL(None, use_errno=True), IN_MODIFY, reports_names=True)
    try:
        into = Changes()
        instance._parse(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0), into, None)
        assert into.everything
        assert into.lost
    finally:
        instance.close()


def _event(wd: int, mask: int, name: bytes = b"", cookie: int = 0) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_writes_and_name_changes_in_one_read_are_parsed_as_they_would_be_one_by_one(tmp_path: Path) -> None:
    events = [
        (IN_MODIFY, b"a.log", 0), (IN_MODIFY, b"a.log", 0), (IN_MODIFY, b"b.log", 0),
        (IN_MOVED_FROM, b"a.log", 7), (IN_MOVED_TO, b"a.log.1", 7), (IN_CREATE, b"a.log", 0),
        (IN_MODIFY, b"a.log", 0), (IN_MODIFY, b"a.log.1", 0), (IN_DELETE, b"b.log", 0), (IN_MODIFY, b"", 0),
    ]

    def parse(chunks: list[bytes], reports_names: bool) -> tuple[Changes, list[NameEvent], bool]:
        instance = _Instance(ctypes.CDLL(None, use_errno=True), IN_MODIFY, reports_names=reports_names)
        try:
            instance.watch({str(tmp_path)})
            wd = instance._wds[str(tmp_path)]
            into, names = Changes(), list[NameEvent]()
            for chunk in chunks:
                instance._parse(chunk.replace(b"WD__", struct.pack("i", wd)), into, names)
            return into, names, instance.names_seen
        finally:
            instance.close()

    raw = [b"WD__" + _event(0, mask, name, cookie)[4:] for mask, name, cookie in events]
    for reports_names in (True, False):
        whole, one_by_one = parse([b"".join(raw)], reports_names), parse(raw, reports_names)
        assert whole == one_by_one
    into, names, _ = parse([b"".join(raw)], True)
    d = str(tmp_path)
    assert into.paths == {f"{d}/a.log", f"{d}/b.log", f"{d}/a.log.1", d}
    assert into.structure
    assert [(n.path, n.change, n.cookie) for n in names] == [
        (f"{d}/a.log", "gone", 7), (f"{d}/a.log.1", "moved_in", 7), (f"{d}/a.log", "created", 0),
        (f"{d}/b.log", "gone", 0)]
    into, names, seen = parse([b"".join(raw)], False)
    assert (into.paths, into.structure, names, seen) == ({f"{d}/a.log", f"{d}/b.log", f"{d}/a.log.1", d}, False, [],
                                                         True)


def test_a_watch_gone_forgets_the_path_kept_from_the_event_before(tmp_path: Path) -> None:
    instance = _Instance(ctypes.CDLL(None, use_errno=True), IN_MODIFY, reports_names=False)
    try:
        instance.watch({str(tmp_path)})
        wd = instance._wds[str(tmp_path)]
        into = Changes()
        instance._parse(_event(wd, IN_MODIFY, b"a.log") + _event(wd, IN_IGNORED) + _event(wd, IN_MODIFY, b"a.log"),
                        into, None)
        assert into.paths == {f"{tmp_path}/a.log"}
        assert into.structure
        assert str(tmp_path) not in instance._wds
    finally:
        instance.close()
