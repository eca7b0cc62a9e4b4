"""The follow core in-process: what happens while the sink holds it back, and when checkpoints fail."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sidecar.core.checkpoint import CheckpointStore
from sidecar.core.config import READ_CHUNK, FollowConfig
from sidecar.core.events import NullObserver, RotationKind
from sidecar.core.server import FileServer
from sidecar.core.sink import Batch
from sidecar.errors import CheckpointError
from tests.sinks import Unbuffered


class GatedSink(Unbuffered):
    """Takes batches only while its gate is open: a receiver that is down, then back.

    ``reads_descriptor`` says whether it stands for a sink that copies from the file while it waits.
    """

    def __init__(self, reads_descriptor: bool = True) -> None:
        self.reads_descriptor = reads_descriptor
        self.out = bytearray()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def emit(self, batch: Batch) -> None:
        data = bytes(batch.data)
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        self.out += data
        batch.commit()

    def offer(self, batch: Batch) -> bool:
        if not self.gate.is_set():
            return False
        self.out += batch.data
        batch.commit()
        return True


class Events(NullObserver):
    def __init__(self) -> None:
        self.rotations: list[RotationKind] = []
        self.given_up_bytes = 0
        self.checkpoints: list[bool] = []

    def rotated(self, pattern: str, kind: RotationKind) -> None:
        self.rotations.append(kind)

    def given_up(self, pattern: str, nbytes: int) -> None:
        self.given_up_bytes += nbytes

    def checkpoint_written(self, ok: bool) -> None:
        self.checkpoints.append(ok)


def _config(tmp_path: Path, rotate_wait_max: float = 3600.0) -> FollowConfig:
    return FollowConfig(paths=(str(tmp_path / "logs" / "app.log"),), checkpoint_dir=tmp_path / "state",
                        poll_interval=0.05, checkpoint_interval=0.05, rotate_wait=0.1, rotate_wait_max=rotate_wait_max)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def test_blocked_sink_still_follows_rotations_and_opens_new_files(tmp_path: Path, log_dir: Path) -> None:
    """Held back by the sink, the core keeps the rotated file open and opens the new one: the app can delete
    the old generation and nothing is lost once the sink takes lines again."""
    app = log_dir / "app.log"

    async def body() -> None:
        sink, events = GatedSink(), Events()
        app.write_bytes(b"".join(b"old %d\n" % i for i in range(100)))
        sink.gate.clear()
        follower = FileServer(_config(tmp_path), sink, events)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        await sink.waiting.wait()
        os.rename(app, log_dir / "app.log.1")
        app.write_bytes(b"".join(b"new %d\n" % i for i in range(50)))
        await _until(lambda: follower.open_files == 2 and "rename" in events.rotations)
        os.unlink(log_dir / "app.log.1")
        sink.gate.set()
        await _until(lambda: sink.out.count(b"\n") == 150)
        stop.set()
        await task
        assert sink.out == b"".join(b"old %d\n" % i for i in range(100)) + b"".join(b"new %d\n" % i for i in range(50))

    _run(body)


def test_rotated_file_the_sink_cannot_take_is_given_up_after_rotate_wait_max_once_the_sink_returns(
    tmp_path: Path, log_dir: Path
) -> None:
    """Give-up never closes a descriptor the sink is still using (it may be inside ``sendfile`` on it): the
    file is let go, and its unread bytes counted, when the sink returns from the batch it holds."""
    app = log_dir / "app.log"
    line = b"x" * 1023 + b"\n"
    chunk = READ_CHUNK

    async def body() -> None:
        sink, events = GatedSink(), Events()
        app.write_bytes(line * 3072)
        sink.gate.clear()
        follower = FileServer(_config(tmp_path, rotate_wait_max=0.3), sink, events)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        await sink.waiting.wait()
        os.rename(app, log_dir / "app.log.1")
        await asyncio.sleep(1.0)
        assert events.given_up_bytes == 0
        assert follower.open_files == 1
        sink.gate.set()
        await _until(lambda: events.given_up_bytes > 0)
        assert follower.open_files == 0
        assert len(sink.out) == chunk
        assert events.given_up_bytes == len(line) * 3072 - chunk
        stop.set()
        await task

    _run(body)


def test_a_given_up_file_is_let_go_at_once_when_the_waiting_sink_does_not_read_its_descriptor(
    tmp_path: Path, log_dir: Path
) -> None:
    """Agent mode copies a batch before it waits for the in-flight window: a receiver down for hours must not
    keep a deleted file's space past --rotate-wait-max."""
    app = log_dir / "app.log"

    async def body() -> None:
        sink, events = GatedSink(reads_descriptor=False), Events()
        app.write_bytes(b"x" * 1023 + b"\n")
        sink.gate.clear()
        follower = FileServer(_config(tmp_path, rotate_wait_max=0.3), sink, events)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        await sink.waiting.wait()
        os.unlink(app)
        await _until(lambda: events.given_up_bytes > 0)
        assert follower.open_files == 0
        assert events.given_up_bytes == 1024
        sink.gate.set()
        stop.set()
        await task

    _run(body)


def test_failing_checkpoint_writes_are_counted_and_lines_keep_flowing(
    tmp_path: Path, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = log_dir / "app.log"
    real_save = CheckpointStore.save
    failures = {"left": 3}

    def flaky_save(self: CheckpointStore, entries: object) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise CheckpointError("cannot write state file: No space left on device")
        real_save(self, entries)  # type: ignore[arg-type]

    monkeypatch.setattr(CheckpointStore, "save", flaky_save)

    async def body() -> None:
        sink, events = GatedSink(), Events()
        follower = FileServer(_config(tmp_path), sink, events)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(stop))
        with app.open("ab") as out:
            for i in range(20):
                out.write(b"line %d\n" % i)
                out.flush()
                await asyncio.sleep(0.02)
        await _until(lambda: sink.out.count(b"\n") == 20 and True in events.checkpoints)
        stop.set()
        await task
        assert events.checkpoints[:3] == [False, False, False]
        assert CheckpointStore(tmp_path / "state").load()[0].offset == app.stat().st_size

    _run(body)
