"""Stream mode's sink: the lines, byte for byte, on the sidecar's own stdout.

When stdout is a pipe or a terminal we write through a non-blocking descriptor of our own (reopened
from ``/proc/self/fd/1``, so the flag never leaks to processes sharing the pipe): a slow reader then parks
only this coroutine, never the event loop, and metrics and probes keep answering while the pipe is full. Raw
batches are copied file-to-pipe in the kernel with ``os.sendfile``; small ones (a line or a few, the usual
case when following) are gathered and written with one call when the reader pauses. The lines are
committed once the kernel has them, which is all "written" can mean for a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import select
import stat
from typing import Literal, Protocol

import stringzilla

from sidecar.core.sink import Batch, Source
from sidecar.errors import SidecarError

Format = Literal["raw", "json"]

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024
"""A larger pipe takes a whole read chunk at once: fewer wake-ups, fewer system calls per megabyte."""


class DeliveryCounter(Protocol):
    def delivered(self, pattern: str, lines: int, nbytes: int) -> None: ...


class StdoutClosed(SidecarError):
    """Nobody reads our stdout any more; the checkpoint keeps what was not written."""


GATHER_BYTES = 64 * 1024
"""Batches smaller than this are gathered and written together when the reader pauses: a round over a
thousand files with a line each is then one write (one wake-up of our reader), not a thousand."""


class StreamSink:
    """Writes every batch to ``fd`` (stdout) and commits it once written; see the module docstring."""

    reads_descriptor = True

    def __init__(self, counter: DeliveryCounter, fmt: Format = "raw", fd: int = 1) -> None:
        self._counter = counter
        self._fmt = fmt
        self._fd, self._owned = _nonblocking_twin(fd)
        self._atomic = fmt == "raw" and _is_pipe(self._fd)
        self._sendfile = fmt == "raw"
        self._gathered = bytearray()
        self._gathered_batches: list[tuple[int, Batch]] = []
        self._written = 0
        self._done = 0

    async def emit(self, batch: Batch) -> None:
        if self._gather(batch):
            if len(self._gathered) >= GATHER_BYTES:
                await self.flush()
            return
        await self.flush()
        data = self._bytes_of(batch)
        if self._sendfile and batch.offset >= 0 and data is batch.data:
            await self._copy(batch)
        else:
            await self._write(data)
        self._delivered(batch)

    def offer(self, batch: Batch) -> bool:
        return len(self._gathered) < GATHER_BYTES and self._gather(batch)

    def write_now(self, source: Source, data: memoryview, lines: int) -> bool:
        """Into a pipe, a write of at most ``PIPE_BUF`` bytes is whole or not at all (POSIX): one call, and the
        lines are safe or untouched. Only with nothing gathered before them, which would be written later."""
        if not self._atomic or self._gathered or len(data) > select.PIPE_BUF:
            return False
        if not self._write_now(data):
            return False
        self._counter.delivered(source.pattern, lines, len(data))
        return True

    def _gather(self, batch: Batch) -> bool:
        """Keep a small batch for the next write; a large one is left to be copied (or written) alone."""
        if len(batch.data) >= GATHER_BYTES:
            return False
        self._gathered += self._bytes_of(batch)
        self._gathered_batches.append((len(self._gathered), batch))
        return True

    def _bytes_of(self, batch: Batch) -> memoryview:
        return memoryview(_json_lines(batch)) if self._fmt == "json" else batch.data

    async def flush(self) -> None:
        while not self.flush_now():
            await self._writable()

    def flush_now(self) -> bool:
        """Write what was gathered as far as the pipe takes it, committing each batch once all of its bytes
        are written; what the pipe did not take stays for the next call."""
        gathered, batches = self._gathered, self._gathered_batches
        while self._written < len(gathered):
            taken = self._write_now(memoryview(gathered)[self._written :] if self._written else gathered)
            if not taken:
                return False
            self._written += taken
            while self._done < len(batches) and batches[self._done][0] <= self._written:
                self._delivered(batches[self._done][1])
                self._done += 1
        if gathered:
            gathered.clear()
            batches.clear()
            self._written = self._done = 0
        return True

    def _delivered(self, batch: Batch) -> None:
        batch.commit()
        self._counter.delivered(batch.source.pattern, batch.lines, len(batch.data))

    async def drain(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()
        if self._owned:
            os.close(self._fd)
            self._owned = False

    async def _copy(self, batch: Batch) -> None:
        """Copy the batch's file range to stdout in the kernel; fall back to writing it from memory."""
        done, total = 0, len(batch.data)
        while done < total:
            try:
                sent = os.sendfile(self._fd, batch.fd, batch.offset + done, total - done)
            except BlockingIOError:
                await self._writable()
                if not _file_still_holds(batch):
                    break
                continue
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self._sendfile = False
                    break
                raise self._closed(exc) from exc
            if sent == 0:
                break
            done += sent
        if done < total:
            await self._write(batch.data[done:])

    async def _write(self, data: memoryview) -> None:
        while data:
            taken = self._write_now(data)
            if taken:
                data = data[taken:]
            else:
                await self._writable()

    def _write_now(self, data: memoryview | bytearray) -> int:
        """Write what the pipe takes without waiting: 0 when it is full."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._closed(exc) from exc

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self._fd, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_writer(self._fd)

    @staticmethod
    def _closed(exc: OSError) -> StdoutClosed:
        return StdoutClosed(f"cannot write to stdout ({exc.strerror}): its reader went away; "
                            "lines not written stay in the checkpoint")


def _file_still_holds(batch: Batch) -> bool:
    """After waiting for stdout: does the file still hold the batch's bytes (not truncated and rewritten
    meanwhile)? If not, the rest is written from the batch's copy in memory, which is what we read."""
    mark = batch.data[-64:]
    try:
        return os.pread(batch.fd, len(mark), batch.offset + len(batch.data) - len(mark)) == mark
    except OSError:
        return False


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _nonblocking_twin(fd: int) -> tuple[int, bool]:
    """A non-blocking descriptor of our own for a pipe (enlarged) or terminal; other stdouts are used as they are.

    Regular files never block, and reopening one would lose its offset; sockets cannot be reopened.
    """
    try:
        is_pipe = _is_pipe(fd)
        if is_pipe or os.isatty(fd):
            twin = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if is_pipe:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(twin, F_SETPIPE_SZ, PIPE_SIZE)
            return twin, True
    except OSError:
        pass
    return fd, False


def _json_lines(batch: Batch) -> bytes:
    """One JSON object per line; invalid UTF-8, in the line or the file name, becomes U+FFFD, since JSON text
    must be Unicode (a name's undecodable bytes would otherwise come out as lone surrogates, ``\\udcff``)."""
    path = os.fsencode(batch.source.path).decode("utf-8", "replace")
    prefix = '{"file":' + json.dumps(path) + ',"log":'
    return _json_objects(prefix, batch.data)


_ESCAPES = ((b"\\", b"\\\\"), (b'"', b'\\"'), (b"\t", b"\\t"))
"""What JSON escapes in valid UTF-8 text free of other control bytes (backslash first)."""

_CONTROL = bytes(c for c in range(0x20) if c not in (0x09, 0x0A))
"""Control bytes other than tab and newline: rare in logs, and escaped by the JSON encoder only."""

_ONE_PER_LINE = json.JSONEncoder(ensure_ascii=False, separators=("\n", ":"))
"""Encodes a list of strings with a raw newline between items: JSON escapes every newline inside a string,
so each raw one in the output is an item boundary."""


def _json_objects(prefix: str, data: memoryview) -> bytes:
    """``prefix`` + the JSON string of each line (CR of CRLF dropped) + ``}``, one per line, as UTF-8.

    Done per batch with a few whole-buffer passes (find, replace), never per line: a batch of valid UTF-8
    without control bytes other than tab needs only its backslashes, quotes and tabs escaped and ``"}``
    and the prefix put around each newline. Any other batch goes through the JSON encoder, once per batch.
    """
    raw = bytes(data)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    if stringzilla.find_first_of(raw, _CONTROL) >= 0 or not _utf8(raw):
        return _json_objects_encoded(prefix, raw)
    for char, escaped in _ESCAPES:
        if char in raw:
            raw = raw.replace(char, escaped)
    head = prefix.encode() + b'"'
    body = raw.replace(b"\n", b'"}\n' + head)
    return b"".join((head, memoryview(body)[: len(body) - len(head)]))


def _json_objects_encoded(prefix: str, raw: bytes) -> bytes:
    """The general case: invalid UTF-8 becomes U+FFFD, control bytes become JSON escapes."""
    lines = raw.decode("utf-8", "replace").split("\n")
    lines.pop()
    body = _ONE_PER_LINE.encode(lines)[1:-1]
    return (prefix + body.replace("\n", "}\n" + prefix) + "}\n").encode()


def _utf8(raw: bytes) -> bool:
    if raw.isascii():
        return True
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True
