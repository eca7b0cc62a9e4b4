"""Stream mode's sink on a real pipe: small batches gathered into one write at ``flush``, and a full pipe
waited for without holding up the event loop.

Batches are built from a real file (so the raw path may ``sendfile`` them) and record their commits; the
pipe is read back byte for byte.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.core.sink import Batch, FileRef, Source
from sidecar.modes.stream.sink import GATHER_BYTES, StdoutClosed, StreamSink
from tests.deliveries import CountingDeliveries

F_GETPIPE_SZ = 1032
BIG = 3 * 1024 * 1024
"""Three times the pipe the sink asks for (1 MiB)."""


class _LogFile:
    """A real log file, open for reading, cut into batches that record their commits in ``committed``."""

    def __init__(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.path = path
        self.data = data
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.source = Source(str(path), f"{path.parent}/*.log", FileRef(st.st_dev, st.st_ino))
        self.committed: list[int] = []

    def batch(self, number: int, start: int, end: int, on_commit: Callable[[], None] | None = None) -> Batch:
        view = memoryview(self.data)[start:end]

        def commit() -> None:
            self.committed.append(number)
            if on_commit is not None:
                on_commit()

        return Batch(self.source, view, view.tobytes().count(b"\n"), self.fd, start, commit)

    def close(self) -> None:
        os.close(self.fd)


def _lines(count: int, width: int) -> list[bytes]:
    return [(b"line %07d " % n).ljust(width - 1, b"x") + b"\n" for n in range(count)]


def _cuts(lines: list[bytes], per_batch: int) -> list[tuple[int, int]]:
    """(start, end) of each run of ``per_batch`` lines."""
    cuts, at = [], 0
    for first in range(0, len(lines), per_batch):
        size = sum(map(len, lines[first : first + per_batch]))
        cuts.append((at, at + size))
        at += size
    return cuts


def _queued(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


class _Pipe:
    """A real pipe whose ends are closed once, by the test or at teardown."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()

    def close_read(self) -> None:
        if self.read >= 0:
            os.close(self.read)
            self.read = -1

    def close_write(self) -> None:
        if self.write >= 0:
            os.close(self.write)
            self.write = -1


@pytest.fixture
def pipe() -> Iterator[_Pipe]:
    made = _Pipe()
    yield made
    made.close_read()
    made.close_write()


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_small_batches_are_gathered_and_committed_in_order_only_at_flush(
    tmp_path: Path, pipe: _Pipe
) -> None:
    read_end, write_end = pipe.read, pipe.write
    lines = _lines(200, 60)
    log = _LogFile(tmp_path / "app.log", b"".join(lines))
    cuts = _cuts(lines, 3)
    assert 0 < len(log.data) < GATHER_BYTES
    counter = CountingDeliveries()

    async def scenario() -> None:
        sink = StreamSink(counter, "raw", fd=write_end)
        for number, (start, end) in enumerate(cuts):
            await sink.emit(log.batch(number, start, end))
        assert log.committed == []
        assert _queued(read_end) == 0
        await sink.flush()
        assert log.committed == list(range(len(cuts)))
        await sink.drain(5.0)

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    assert _queued(read_end) == len(log.data)
    assert os.read(read_end, len(log.data) + 1) == log.data
    assert (counter.lines, counter.nbytes) == (len(lines), len(log.data))


def test_gathered_batches_are_written_before_one_that_fills_the_gathering_or_is_large(
    tmp_path: Path, pipe: _Pipe
) -> None:
    """Reaching ``GATHER_BYTES`` writes what was gathered without a flush; a large batch goes after it."""
    read_end, write_end = pipe.read, pipe.write
    lines = _lines(4 * GATHER_BYTES // 100, 100)
    log = _LogFile(tmp_path / "app.log", b"".join(lines))
    small = _cuts(lines[: 2 * GATHER_BYTES // 100], 4)
    large_start = small[-1][1]
    under = next(n for n, (_, end) in enumerate(small) if end >= GATHER_BYTES)

    async def scenario() -> None:
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        for number, (start, end) in enumerate(small[:under]):
            await sink.emit(log.batch(number, start, end))
        assert log.committed == []
        await sink.emit(log.batch(under, *small[under]))
        assert log.committed == list(range(under + 1))
        for number in range(under + 1, len(small)):
            await sink.emit(log.batch(number, *small[number]))
        await sink.emit(log.batch(len(small), large_start, len(log.data)))
        assert log.committed == list(range(len(small) + 1))
        await sink.drain(5.0)

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    received = bytearray()
    while len(received) < len(log.data):
        received += os.read(read_end, len(log.data))
    assert bytes(received) == log.data


class _StalledReader:
    """Reads nothing until :meth:`release` (or, so that a blocked event loop fails the test instead of hanging
    it, until ``watchdog`` seconds passed), then everything until end of file.

    Each read and its append happen under :attr:`lock`, so that a look under it sees every byte written
    either still in the pipe or in :attr:`received`, none in between.
    """

    def __init__(self, fd: int, watchdog: float = 30.0) -> None:
        self.fd = fd
        self.received = bytearray()
        self.lock = threading.Lock()
        self.watchdog_fired = threading.Event()
        self._released = threading.Event()
        self._watchdog = watchdog
        os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def written(self) -> int:
        """Bytes written to the pipe so far (read, or waiting in it)."""
        with self.lock:
            return len(self.received) + _queued(self.fd)

    def release(self) -> None:
        self._released.set()

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the pipe never reached end of file"

    def _run(self) -> None:
        if not self._released.wait(self._watchdog):
            self.watchdog_fired.set()
        readable = select.poll()
        readable.register(self.fd, select.POLLIN)
        while True:
            readable.poll()
            with self.lock:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                self.received += chunk


def test_batch_larger_than_a_stalled_pipe_waits_off_the_event_loop_and_is_committed_once_drained(
    tmp_path: Path, pipe: _Pipe
) -> None:
    read_end, write_end = pipe.read, pipe.write
    log = _LogFile(tmp_path / "app.log", b"".join(_lines(BIG // 64, 64)))
    reader = _StalledReader(read_end)
    written_at_commit: list[int] = []

    def on_commit() -> None:
        written_at_commit.append(reader.written())

    async def scenario() -> None:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        capacity = fcntl.fcntl(read_end, F_GETPIPE_SZ)
        assert capacity < len(log.data)
        emitting = asyncio.create_task(sink.emit(log.batch(0, 0, len(log.data), on_commit)))

        def free() -> bool:
            return not reader.watchdog_fired.is_set()

        await _until(lambda: _queued(read_end) >= capacity or not free(), "the pipe to fill")
        assert free(), "the event loop was blocked while the pipe was full"
        seen = ticks
        await _until(lambda: ticks >= seen + 20 or not free(), "20 ticks while the pipe is full")
        assert free(), "the event loop was blocked while the pipe was full"
        assert not emitting.done()
        assert log.committed == []

        reader.release()
        await asyncio.wait_for(emitting, 60)
        assert log.committed == [0]
        ticker.cancel()
        await sink.drain(5.0)

    try:
        asyncio.run(scenario())
    finally:
        log.close()
        pipe.close_write()
    reader.join()
    assert len(written_at_commit) == 1
    assert written_at_commit[0] == len(log.data)
    assert bytes(reader.received) == log.data


def test_reader_closing_the_pipe_while_a_write_is_blocked_raises_stdout_closed(
    tmp_path: Path, pipe: _Pipe
) -> None:
    read_end, write_end = pipe.read, pipe.write
    log = _LogFile(tmp_path / "app.log", b"".join(_lines(BIG // 64, 64)))

    async def scenario() -> None:
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        capacity = fcntl.fcntl(read_end, F_GETPIPE_SZ)
        emitting = asyncio.create_task(sink.emit(log.batch(0, 0, len(log.data))))
        await _until(lambda: _queued(read_end) >= capacity, "the pipe to fill")
        await asyncio.sleep(0.05)
        assert not emitting.done()
        pipe.close_read()
        with pytest.raises(StdoutClosed):
            await asyncio.wait_for(emitting, 30)
        assert log.committed == []
        await sink.drain(1.0)

    try:
        asyncio.run(scenario())
    finally:
        log.close()
