"""Writing to a full pipe the way ``tail`` does: one blocking ``write``, in a thread of its own.

Behind a slow reader the pipe is full most of the time. Waiting for it to become writable on the event
loop wakes the sidecar each time the reader frees a few pages, to copy a few pages: a wake-up and a
system call per 64 KiB, which cost more CPU per gigabyte than the copying. A blocking ``write`` lets
the kernel do that waiting, so a whole read chunk costs one hand-over to this thread and one back, while
the event loop stays free (metrics, probes, new files) however long the reader takes.

The bytes written are the ones in memory, which are what the core read: a file truncated and rewritten
while the reader stalls cannot change them, as it could those of a ``sendfile`` still under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading

_Job = tuple[memoryview, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class BlockingWriter:
    """Writes whole buffers to ``fd``, a blocking descriptor of the pipe it owns, from a daemon thread.

    A daemon, because at exit a reader that never reads again must not keep the process alive: what
    it did not take is not committed, and is read again after the restart.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def write(self, data: memoryview) -> None:
        """Write all of ``data``; ``data`` must stay valid until this returns. Raises OSError."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stdout", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((data, loop, done))
        await done

    def close(self) -> None:
        """Close the descriptor, or let the thread close it once it has written what it holds: closed under
        a write still blocked, its number could be reused by another file and the write go there."""
        if self._thread is None:
            os.close(self._fd)
        else:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, loop, done = job
            error: OSError | None = None
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(_settle, done, error)
        os.close(self._fd)


def _settle(done: asyncio.Future[None], error: OSError | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)

