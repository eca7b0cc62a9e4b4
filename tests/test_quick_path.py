"""The quick path: writes served while the reader waits (from the loop's sleep or the loop), and what it leaves
to the reader.

A sink records which way each batch came (``offer`` from the loop, ``emit`` from the reader task) and can
refuse offers, as a sink holding back would: refused batches must still come out once, in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.core.config import FollowConfig
from sidecar.core.events import NullObserver
from sidecar.core.server import FileServer, TaskFailed
from sidecar.core.sink import Batch, Source
from sidecar.modes.stream.sink import GATHER_BYTES, StreamSink
from tests.checker import check
from tests.deliveries import CountingDeliveries
from tests.sinks import Unbuffered, until
from tests.writer import LogWriter


@pytest.fixture(autouse=True, params=["lending loop", "plain loop"])
def _either_loop(request: pytest.FixtureRequest) -> None:
    """Writes are served from the lending loop's reader thread or, on a plain loop, from the loop itself."""
    if request.param == "plain loop":
        request.getfixturevalue("plain_loop")


class RecordingSink(Unbuffered):
    """Keeps the lines and how each batch came; ``refuse(n)`` says whether the n-th offer is turned down."""

    def __init__(self, refuse: Callable[[int], bool] = lambda n: False) -> None:
        self.out = bytearray()
        self.offered = 0
        self.emitted = 0
        self._refuse = refuse
        self._offers = 0

    async def emit(self, batch: Batch) -> None:
        self.emitted += 1
        self._take(batch)

    def offer(self, batch: Batch) -> bool:
        self._offers += 1
        if self._refuse(self._offers):
            return False
        self.offered += 1
        self._take(batch)
        return True

    def _take(self, batch: Batch) -> None:
        self.out += batch.data
        batch.commit()


def _config(tmp_path: Path, path: Path) -> FollowConfig:
    return FollowConfig(paths=(str(path),), checkpoint_dir=tmp_path / "state", poll_interval=0.2,
                        checkpoint_interval=5.0, rotate_wait=0.3)


def _follow(tmp_path: Path, sink: RecordingSink | StreamSink, body: Callable[[], object]) -> None:
    """Run a file server on ``logs/app.log`` while ``body`` (a coroutine function) writes."""
    (tmp_path / "logs").mkdir(exist_ok=True)

    async def main() -> None:
        server = FileServer(_config(tmp_path, tmp_path / "logs" / "app.log"), sink, NullObserver())
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await asyncio.sleep(0.2)
        result = body()
        if asyncio.iscoroutine(result):
            await result
        stop.set()
        await task

    asyncio.run(main())


def test_lines_written_now_and_then_are_served_without_waking_the_reader(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "logs" / "app.log")
    sink = RecordingSink()

    async def trickle() -> None:
        for _ in range(40):
            writer.write(1)
            await asyncio.sleep(0.01)
        await until(lambda: bytes(sink.out).count(b"\n") == 40)

    _follow(tmp_path, sink, trickle)
    assert check(bytes(sink.out), {"app": writer.written}).ok
    assert sink.offered >= 35, f"{sink.offered} of 40 lines came by the quick path, {sink.emitted} woke the reader"


@pytest.mark.parametrize("round_", range(3))
def test_writes_that_keep_coming_are_served_several_to_a_round(round_: int, tmp_path: Path) -> None:
    """About 10,000 lines/s, one write each, from another process: each round pauses for more first."""
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "app.log"
    LogWriter(path).write(1)
    sink = RecordingSink()
    lines = 3000

    async def stream() -> None:
        app = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.writer", str(path), "--stream", "busy", "--lines", str(lines),
            "--interval", "0.00005", cwd=Path(__file__).parent.parent,
        )
        await app.wait()
        await until(lambda: bytes(sink.out).count(b"\n") >= 1 + lines)

    _follow(tmp_path, sink, stream)
    report = check(bytes(sink.out), {"app": [0], "busy": range(lines)})
    assert report.ok, report.summary()
    rounds = sink.offered + sink.emitted
    assert rounds < lines * 3 / 4, f"{rounds} rounds for {lines} lines: writes were not gathered"


@pytest.mark.parametrize("refuse_every", [2, 3, 7])
def test_batches_the_sink_refuses_reach_it_through_the_reader_once_and_in_file_order(
    refuse_every: int, tmp_path: Path
) -> None:
    writer = LogWriter(tmp_path / "logs" / "app.log")
    sink = RecordingSink(refuse=lambda n: n % refuse_every == 0)

    async def trickle() -> None:
        for round_ in range(120):
            writer.write(1 + round_ % 4)
            await asyncio.sleep(0.002 if round_ % 5 else 0.02)
        await until(lambda: bytes(sink.out).count(b"\n") >= len(writer.written))

    _follow(tmp_path, sink, trickle)
    report = check(bytes(sink.out), {"app": writer.written})
    assert report.ok, report.summary()
    assert sink.offered, "no batch came by the quick path"
    assert sink.emitted, "no refused batch came through the reader"


@contextlib.contextmanager
def _pipe_read_by_a_thread() -> Iterator[tuple[int, bytearray]]:
    """A pipe's write end for a sink, and what a thread reading its other end received."""
    read_end, write_end = os.pipe()
    received = bytearray()

    def read_all() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        yield write_end, received
    finally:
        os.close(write_end)
        reader.join(30)
        os.close(read_end)


def test_a_burst_larger_than_a_gathered_write_after_a_quiet_spell_comes_out_whole(tmp_path: Path) -> None:
    """The stream sink refuses to gather a large batch: the reader copies it in the kernel instead."""
    writer = LogWriter(tmp_path / "logs" / "app.log")
    with _pipe_read_by_a_thread() as (write_end, received):
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)

        async def bursts() -> None:
            for _ in range(3):
                writer.write(1)
                await asyncio.sleep(0.05)
                writer.write(3 * GATHER_BYTES // 40)
                await asyncio.sleep(0.05)
            size = os.path.getsize(tmp_path / "logs" / "app.log")
            await until(lambda: len(received) >= size)

        _follow(tmp_path, sink, bursts)
    report = check(bytes(received), {"app": writer.written})
    assert report.ok, report.summary()


class CountingStreamSink(StreamSink):
    """The stream sink, counting the lines it wrote at once and the batches offered to it."""

    def __init__(self, fd: int) -> None:
        self.deliveries = CountingDeliveries()
        super().__init__(self.deliveries, "raw", fd=fd)
        self.at_once = self.offers = 0

    def write_now(self, source: Source, data: memoryview, lines: int) -> bool:
        written = super().write_now(source, data, lines)
        self.at_once += written
        return written

    def offer(self, batch: Batch) -> bool:
        self.offers += 1
        return super().offer(batch)


def test_a_line_now_and_then_into_a_pipe_is_written_at_once_counted_and_its_position_saved(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "app.log"
    writer = LogWriter(path)
    with _pipe_read_by_a_thread() as (write_end, received):
        sink = CountingStreamSink(write_end)

        async def trickle() -> None:
            for _ in range(40):
                writer.write(1)
                await asyncio.sleep(0.01)
            await until(lambda: bytes(received).count(b"\n") == 40)

        _follow(tmp_path, sink, trickle)
    report = check(bytes(received), {"app": writer.written})
    assert report.ok, report.summary()
    assert sink.at_once >= 35, f"{sink.at_once} of 40 lines written at once, {sink.offers} batches offered"
    assert (sink.deliveries.lines, sink.deliveries.nbytes) == (40, path.stat().st_size)
    (saved,) = json.loads((tmp_path / "state" / "sidecar-state.json").read_text())["files"]
    assert saved["offset"] == path.stat().st_size


def test_a_sink_failing_on_the_quick_path_ends_the_run_with_an_error(tmp_path: Path) -> None:
    class Failing(RecordingSink):
        def offer(self, batch: Batch) -> bool:
            raise RuntimeError("sink broke")

    (tmp_path / "logs").mkdir()
    writer = LogWriter(tmp_path / "logs" / "app.log")
    writer.write(1)

    async def write_once() -> None:
        writer.write(1)
        await asyncio.sleep(2)

    with pytest.raises(TaskFailed, match="sink broke"):
        _follow(tmp_path, Failing(), write_once)
