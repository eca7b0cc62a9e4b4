"""The polling backend: no events, the core re-checks everything every poll interval."""

from __future__ import annotations

import asyncio
import contextlib

from sidecar.core.watch.base import Changes, DataCallback, NamesCallback


class PollWatcher:
    """Sleeps until the next poll; works on every filesystem. It reports no names: polling finds them."""

    live = False

    def __init__(self) -> None:
        self._woken = asyncio.Event()

    def start(self, on_names: NamesCallback, on_data: DataCallback | None = None) -> None:
        pass

    def watch(self, dirs: set[str]) -> None:
        pass

    async def wait(self, timeout: float) -> Changes:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), max(timeout, 0.0))
        self._woken.clear()
        return Changes(everything=True)

    def take_queued(self, into: Changes) -> bool:
        return True

    def names_now(self) -> None:
        pass

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        pass
