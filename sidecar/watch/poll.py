"""The polling backend: no events, the core re-checks everything every poll interval."""

from __future__ import annotations

import asyncio

from sidecar.watch.base import Changes


class PollWatcher:
    """Sleeps until the next poll; works on every filesystem."""

    def watch(self, dirs: set[str]) -> None:
        pass

    async def wait(self, timeout: float) -> Changes:
        await asyncio.sleep(max(timeout, 0.0))
        return Changes(everything=True)

    def close(self) -> None:
        pass
