"""When the checkpointer saves: at once after a catch-up that leaves much unsaved, otherwise within the bound.

Driven directly, with a real state file: a trickle of lines catches up on every line, and saving on every
catch-up would write the state file per line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sidecar.core import checkpointer
from sidecar.core.checkpoint import CheckpointStore
from sidecar.core.checkpointer import SAVE_NOW_BYTES, Checkpointer
from sidecar.core.events import NullObserver
from sidecar.core.registry import Registry


class Saves(NullObserver):
    """When each state file was written (the writer thread reports it)."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def checkpoint_written(self, ok: bool) -> None:
        assert ok
        self.at.append(time.monotonic())


def _drive(tmp_path: Path, body: Callable[[Checkpointer, Saves], Awaitable[None]]) -> Saves:
    saves = Saves()
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    keeper = Checkpointer(store, Registry(saves), saves, interval=60.0, forget_after=3600.0)

    async def main() -> None:
        finished = asyncio.Event()
        task = asyncio.create_task(keeper.run(finished))
        await body(keeper, saves)
        finished.set()
        await task
        keeper.save_final()

    try:
        asyncio.run(main())
    finally:
        store.close()
    return saves


def test_a_trickle_that_catches_up_on_every_line_is_saved_a_few_times_a_second_not_per_line(tmp_path: Path) -> None:
    """1,000 lines of 100 bytes a second, each one a catch-up: saved about every PROGRESS_BOUND, never
    later than that after the progress (plus the write), never 20 times a second."""
    began: list[float] = []

    async def trickle(keeper: Checkpointer, saves: Saves) -> None:
        began.append(time.monotonic())
        while time.monotonic() - began[0] < 1.5:
            keeper.progressed(100)
            keeper.caught_up()
            await asyncio.sleep(0.001)

    saves = _drive(tmp_path, trickle)
    assert 3 <= len(saves.at) <= 8, f"{len(saves.at)} saves in 1.5 s"
    gaps = [b - a for a, b in zip([began[0], *saves.at], saves.at, strict=False)]
    assert max(gaps) < checkpointer.PROGRESS_BOUND + 0.25, f"progress waited {max(gaps):.3f} s for a save"


def test_progress_of_a_reader_that_never_catches_up_is_saved_within_the_bound(tmp_path: Path) -> None:
    """A long backlog: commits keep coming and the reader never catches up. Each save is followed by more
    progress, which a wait begun with nothing unsaved must not leave for --checkpoint-interval (60 s here)."""
    began: list[float] = []

    async def backlog(keeper: Checkpointer, saves: Saves) -> None:
        began.append(time.monotonic())
        while time.monotonic() - began[0] < 1.5:
            keeper.progressed(512 * 1024)
            await asyncio.sleep(0.002)

    saves = _drive(tmp_path, backlog)
    assert len(saves.at) >= 3, f"{len(saves.at)} saves in 1.5 s of progress"
    gaps = [b - a for a, b in zip([began[0], *saves.at], saves.at, strict=False)]
    assert max(gaps) < checkpointer.PROGRESS_BOUND + 0.25, f"progress waited {max(gaps):.3f} s for a save"


@pytest.mark.parametrize("unsaved", [SAVE_NOW_BYTES, 10 * SAVE_NOW_BYTES])
def test_a_catch_up_that_leaves_much_unsaved_is_saved_at_once(
    unsaved: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound is made long here, so that a save that comes soon can only be the catch-up's."""
    monkeypatch.setattr(checkpointer, "PROGRESS_BOUND", 30.0)
    waited: list[float] = []

    async def catch_up(keeper: Checkpointer, saves: Saves) -> None:
        keeper.progressed(unsaved)
        began = time.monotonic()
        keeper.caught_up()
        while not saves.at and time.monotonic() - began < 10:
            await asyncio.sleep(0.005)
        waited.append(saves.at[0] - began if saves.at else float("inf"))

    _drive(tmp_path, catch_up)
    assert waited[0] < 5.0


def test_a_catch_up_after_little_progress_waits_for_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpointer, "PROGRESS_BOUND", 1.5)
    seen: list[int] = []

    async def catch_up(keeper: Checkpointer, saves: Saves) -> None:
        keeper.progressed(SAVE_NOW_BYTES - 1)
        began = time.monotonic()
        keeper.caught_up()
        await asyncio.sleep(0.75)
        seen.append(len(saves.at))
        while not saves.at and time.monotonic() - began < 10:
            await asyncio.sleep(0.005)
        seen.append(len(saves.at))

    _drive(tmp_path, catch_up)
    assert seen == [0, 1], "not saved by the catch-up, then saved by the bound"
