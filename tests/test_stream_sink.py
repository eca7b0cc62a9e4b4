"""Stream mode's sink: what ``--format json`` writes for any bytes, and when a raw batch counts as written.

The JSON encoding is done per batch with whole-buffer passes; these tests hold it to the per-line
definition (each line decoded with U+FFFD for invalid UTF-8, a CRLF's ``\\r`` dropped, encoded by the
standard library), and hold the raw path to the rule that a batch is committed only once the kernel took
every byte of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import termios
import threading
from collections.abc import Callable
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from sidecar.core.sink import Batch, Source
from sidecar.modes.stream.sink import GATHER_BYTES, PIPE_SIZE, StreamSink
from tests.deliveries import CountingDeliveries

F_GETPIPE_SZ = 1032

PATH = "/var/log/app/app.log"
_PIECES = [b"a", b"z ", b"\n", b"\r", b"\r\n", b'"', b"\\", b"\\n", b"\t", b"\x00", b"\x1b", b"\x7f", b"/", b"}",
           "é".encode(), "€".encode(), "🚀".encode(), "\u2028".encode(), b"\xff", b"\xc3", b"\xe2\x82", b"\x80"]


def _batch(data: bytes, fd: int = -1, offset: int = -1, on_commit: Callable[[], None] = lambda: None) -> Batch:
    return Batch(Source(PATH, "/var/log/app/*.log"), memoryview(data), data.count(b"\n"), fd, offset, on_commit)


def _emit_json(data: bytes) -> bytes:
    read_end, write_end = os.pipe()
    try:
        counter = CountingDeliveries()

        async def emit() -> None:
            sink = StreamSink(counter, "json", fd=write_end)
            await sink.emit(_batch(data))
            await sink.drain(1.0)

        asyncio.run(emit())
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            return pipe.read()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def _expected_json(data: bytes) -> bytes:
    """The definition, line by line."""
    prefix = '{"file":' + json.dumps(PATH) + ',"log":'
    lines = data.split(b"\n")[:-1]
    text = "".join(
        prefix + json.dumps(line.removesuffix(b"\r").decode("utf-8", "replace"), ensure_ascii=False) + "}\n"
        for line in lines
    )
    return text.encode()


@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join), min_size=1, max_size=12))
@example([b'{"level":"info","msg":"quoted \\"x\\", tab\there"}'])
@example([b"plain ascii", b"windows\r", b""])
@example([b"bad \xff utf-8", "ünïcödé 🚀".encode()])
def test_json_batch_is_exactly_the_per_line_encoding_of_every_line(lines: list[bytes]) -> None:
    data = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    out = _emit_json(data)
    assert out == _expected_json(data)
    for record, line in zip(out.splitlines(), data.split(b"\n"), strict=False):
        assert json.loads(record) == {"file": PATH, "log": line.removesuffix(b"\r").decode("utf-8", "replace")}


def _queued(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def test_raw_batch_is_committed_only_after_the_pipe_took_its_last_byte(tmp_path: Path) -> None:
    """A reader that stops leaves the batch uncommitted however long we wait; reading lets it finish."""
    data = b"".join(b"line %07d of a batch bigger than the pipe\n" % i for i in range(3 * PIPE_SIZE // 40))
    log = tmp_path / "app.log"
    log.write_bytes(data)
    read_end, write_end = os.pipe()
    committed = threading.Event()
    received = bytearray()

    def read_all() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    async def scenario() -> None:
        file_fd = os.open(log, os.O_RDONLY)
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        try:
            emitting = asyncio.create_task(sink.emit(_batch(data, file_fd, 0, committed.set)))
            capacity = fcntl.fcntl(read_end, F_GETPIPE_SZ)
            while _queued(read_end) < capacity:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            assert not committed.is_set()
            assert not emitting.done()
            reader = threading.Thread(target=read_all)
            reader.start()
            await asyncio.wait_for(emitting, 60)
            assert committed.is_set()
            await sink.drain(1.0)
        finally:
            os.close(file_fd)
            os.close(write_end)
        reader.join(60)

    try:
        asyncio.run(scenario())
    finally:
        os.close(read_end)
    assert bytes(received) == data


def _fill(write_end: int) -> int:
    """Fill the pipe to its last byte with ``x``; returns how many were written."""
    filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
    filled = 0
    try:
        for piece in (b"x" * 4096, b"x"):
            with contextlib.suppress(BlockingIOError):
                while True:
                    filled += os.write(filler, piece)
    finally:
        os.close(filler)
    return filled


def test_offered_batch_is_committed_only_once_the_pipe_took_it_and_large_ones_are_left_to_emit() -> None:
    read_end, write_end = os.pipe()
    try:
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        filled = _fill(write_end)
        committed: list[bytes] = []
        first, second = b"first line\n", b"second line\n"
        assert sink.offer(_batch(first, on_commit=lambda: committed.append(first)))
        assert sink.offer(_batch(second, on_commit=lambda: committed.append(second)))
        assert not sink.offer(_batch(b"y" * (GATHER_BYTES - 1) + b"\n")), "a large batch is for emit"
        assert not sink.flush_now()
        assert committed == []
        out = bytearray()
        while not sink.flush_now():
            out += os.read(read_end, 1 << 20)
        assert committed == [first, second]
        while len(out) < filled + len(first + second):
            out += os.read(read_end, 1 << 20)
        assert bytes(out) == b"x" * filled + first + second
        asyncio.run(sink.drain(1.0))
    finally:
        os.close(read_end)
        os.close(write_end)


def test_lines_written_at_once_into_a_pipe_are_whole_or_not_written_at_all() -> None:
    read_end, write_end = os.pipe()
    try:
        counter = CountingDeliveries()
        sink = StreamSink(counter, "raw", fd=write_end)
        source = Source(PATH, "/var/log/app/*.log")
        lines = b"one\ntwo\n"
        assert sink.write_now(source, memoryview(lines), 2)
        assert os.read(read_end, 1 << 20) == lines
        assert (counter.lines, counter.nbytes) == (2, len(lines))
        assert not sink.write_now(source, memoryview(b"z" * select.PIPE_BUF + b"\n"), 1), "larger: not atomic"
        filled = _fill(write_end)
        assert not sink.write_now(source, memoryview(b"full\n"), 1)
        out = bytearray()
        while len(out) < filled:
            out += os.read(read_end, 1 << 20)
        assert bytes(out) == b"x" * filled, "a refused write leaves nothing in the pipe"
        assert (counter.lines, counter.nbytes) == (2, len(lines))
        asyncio.run(sink.drain(1.0))
    finally:
        os.close(read_end)
        os.close(write_end)


def test_lines_are_not_written_at_once_behind_gathered_ones_or_other_than_raw_into_a_pipe(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    source = Source(PATH, "/var/log/app/*.log")
    try:
        sink = StreamSink(CountingDeliveries(), "raw", fd=write_end)
        _fill(write_end)
        assert sink.offer(_batch(b"gathered\n"))
        os.read(read_end, 1 << 20)
        assert not sink.write_now(source, memoryview(b"after\n"), 1), "it would overtake the gathered line"
        assert not StreamSink(CountingDeliveries(), "json", fd=write_end).write_now(source, memoryview(b"a\n"), 1)
        asyncio.run(sink.drain(1.0))
    finally:
        os.close(read_end)
        os.close(write_end)
    with (tmp_path / "out").open("wb") as out:
        assert not StreamSink(CountingDeliveries(), "raw", fd=out.fileno()).write_now(source, memoryview(b"a\n"), 1)
