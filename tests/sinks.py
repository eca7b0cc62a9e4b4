"""What the in-process tests' sinks share: the parts of a :class:`~sidecar.core.sink.Sink` they leave alone,
and waiting for what they collect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sidecar.core.sink import Source


class Unbuffered:
    """A sink that gathers nothing (flushing is a no-op) and has nothing left to wait for at shutdown."""

    reads_descriptor = False

    async def flush(self) -> None:
        pass

    def write_now(self, source: Source, data: memoryview, lines: int) -> bool:
        return False

    def flush_now(self) -> bool:
        return True

    async def drain(self, timeout: float) -> None:
        pass


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition``, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
