"""What every watch backend gives the follow core: wake-ups with a hint of what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Changes:
    """What woke the core: the paths that changed, and whether files may have appeared or vanished."""

    paths: set[str] = field(default_factory=set)
    structure: bool = False
    everything: bool = False


class Watcher(Protocol):
    """A source of wake-ups."""

    def watch(self, dirs: set[str]) -> None:
        """Watch exactly these directories from now on."""

    async def wait(self, timeout: float) -> Changes:
        """Return when something changed, or after ``timeout`` seconds with ``everything`` set."""

    def wake(self) -> None:
        """Make a pending :meth:`wait` return now (used to stop)."""

    def close(self) -> None:
        """Release the backend's resources."""
