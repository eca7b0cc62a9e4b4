"""The checkpointer's writer thread: the loop hands it snapshots and never waits for a write."""

from __future__ import annotations

import threading
import time

import pytest

from sidecar.core.checkpoint import Entry
from sidecar.core.checkpointer import _Writer


def test_a_snapshot_handed_while_a_write_is_under_way_replaces_the_older_one_not_yet_written() -> None:
    """Each snapshot holds every file, so only the newest waiting one is worth writing after a slow write."""
    release = threading.Event()
    written: list[list[Entry | str]] = []

    def save(entries: list[Entry | str]) -> None:
        written.append(entries)
        if len(written) == 1:
            release.wait(5)

    writer = _Writer(save)
    writer.hand(["first"])
    deadline = time.monotonic() + 5
    while not written:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    writer.hand(["second"])
    writer.hand(["third"])  # the loop goes on at once: hand() does not wait for the write under way
    release.set()
    deadline = time.monotonic() + 5
    while len(written) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    writer.close(["last"])
    assert written == [["first"], ["third"], ["last"]]


def test_a_write_that_raises_is_raised_again_in_the_loop_and_at_shutdown() -> None:
    """A bug in the writer must end the process (as a failed task does), not leave checkpoints silently stopped."""
    def save(entries: list[Entry | str]) -> None:
        raise RuntimeError("state writer broke")

    writer = _Writer(save)
    writer.hand(["entry"])
    deadline = time.monotonic() + 5
    while not _fails(writer):
        assert time.monotonic() < deadline, "the error never reached the loop"
        time.sleep(0.001)
    with pytest.raises(RuntimeError, match="state writer broke"):
        writer.close(["last"])


def _fails(writer: _Writer) -> bool:
    try:
        writer.check()
    except RuntimeError:
        return True
    return False
