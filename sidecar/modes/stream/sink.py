"""Stream mode's sink: the lines, byte for byte, on the sidecar's own stdout.

When stdout is a pipe or a terminal we write through a non-blocking descriptor of our own (reopened
from ``/proc/self/fd/1``, so the flag never leaks to processes sharing the pipe): a slow reader then parks
only this coroutine, never the event loop, and metrics and probes keep answering while the pipe is full. Raw
batches are copied file-to-pipe in the kernel with ``os.sendfile``; the lines are committed once the
kernel has them, which is all "written" can mean for a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import stat
from typing import Literal, Protocol

from sidecar.core.sink import Batch
from sidecar.errors import SidecarError

Format = Literal["raw", "json"]

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024
"""A larger pipe takes a whole read chunk at once: fewer wake-ups, fewer system calls per megabyte."""


class DeliveryCounter(Protocol):
    def delivered(self, pattern: str, lines: int, nbytes: int) -> None: ...


class StdoutClosed(SidecarError):
    """Nobody reads our stdout any more; the checkpoint keeps what was not written."""


class StreamSink:
    """Writes every batch to ``fd`` (stdout) and commits it once written."""

    def __init__(self, counter: DeliveryCounter, fmt: Format = "raw", fd: int = 1) -> None:
        self._counter = counter
        self._fmt = fmt
        self._fd, self._owned = _nonblocking_twin(fd)
        self._sendfile = fmt == "raw"

    async def emit(self, batch: Batch) -> None:
        if self._fmt == "json":
            await self._write(memoryview(_json_lines(batch)))
        elif self._sendfile and batch.offset >= 0:
            await self._copy(batch)
        else:
            await self._write(batch.data)
        batch.commit()
        self._counter.delivered(batch.source.pattern, batch.lines, len(batch.data))

    async def drain(self, timeout: float) -> None:
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
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                await self._writable()
                continue
            except OSError as exc:
                raise self._closed(exc) from exc
            data = data[written:]

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


def _nonblocking_twin(fd: int) -> tuple[int, bool]:
    """A non-blocking descriptor of our own for a pipe (enlarged) or terminal; other stdouts are used as they are.

    Regular files never block, and reopening one would lose its offset; sockets cannot be reopened.
    """
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
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
    """One JSON object per line; invalid UTF-8 becomes U+FFFD, since JSON text must be Unicode."""
    prefix = '{"file":' + json.dumps(batch.source.path) + ',"log":'
    lines = bytes(batch.data).split(b"\n")[:-1]
    text = "".join(
        prefix + json.dumps(line.removesuffix(b"\r").decode("utf-8", "replace")) + "}\n" for line in lines
    )
    return text.encode()
