"""The inotify watcher's wait: each wait times out at its own deadline although the timer is kept from one
wait to the next, and the path kept from the event before never names a file of another directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sidecar.core.watch import Changes
from sidecar.core.watch.inotify import InotifyWatcher


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


def test_queued_tells_whether_events_wait_without_reading_them(tmp_path: Path) -> None:
    """The data callback asks whether names wait before it reads them; a wrong no would serve a write
    before the rename that came before it."""
    watcher = InotifyWatcher()
    try:
        watcher.watch({str(tmp_path)})
        names, data = watcher._names, watcher._data
        assert not names.queued()
        assert not data.queued()
        _append(tmp_path / "app.log")
        assert names.queued()
        assert data.queued()
        changes = Changes()
        assert names.read(changes)
        assert not names.queued()
        assert data.queued()
        (tmp_path / "app.log").rename(tmp_path / "app.log.1")
        assert names.queued()
    finally:
        watcher.close()


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
