"""Inotify and its fallback: the watcher is live only while every directory asked for is watched, and while
it is live, new names come from its events rather than from the (then rare) rescan of the globs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.core.watch.inotify import InotifyWatcher
from tests.conftest import SidecarFactory
from tests.writer import LogWriter


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def core_log() -> Iterator[_Collect]:
    """What ``sidecar.core`` logs at warning and above, whatever the logging setup of earlier tests."""
    logger = logging.getLogger("sidecar.core")
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _not_watched(log: _Collect) -> list[str]:
    """The directories named by ``directory_not_watched`` warnings, in order."""
    return [str(r.__dict__["fields"]["directory"]) for r in log.records if r.getMessage() == "directory_not_watched"]


def test_watcher_is_not_live_while_a_directory_cannot_be_watched_and_live_again_without_it(
    tmp_path: Path, core_log: _Collect
) -> None:
    good, missing = tmp_path / "logs", tmp_path / "gone"
    good.mkdir()
    watcher = InotifyWatcher()
    try:
        watcher.watch({str(good)})
        assert watcher.live
        assert _not_watched(core_log) == []

        watcher.watch({str(good), str(missing)})
        assert not watcher.live
        assert _not_watched(core_log) == [str(missing)]

        watcher.watch({str(good), str(missing)})
        assert not watcher.live
        assert _not_watched(core_log) == [str(missing)], "warned again for a directory already reported"

        watcher.watch({str(good)})
        assert watcher.live
    finally:
        watcher.close()


def test_file_created_in_a_watched_directory_is_followed_from_events_with_a_30s_poll_interval(
    sidecar: SidecarFactory, log_dir: Path
) -> None:
    """With live inotify the globs are rescanned every 5 polls (150 s here): only the event can find it."""
    first = LogWriter(log_dir / "first.log", "first")
    first.write(3)
    sc = sidecar(f"{log_dir}/*.log", "--watch", "inotify", "--poll-interval", "30s")
    sc.wait_for_lines(3)
    late = LogWriter(log_dir / "late.log", "late")
    late.write(5)
    sc.wait_delivered({"first": first.written, "late": late.written}, timeout=10)
