"""What every watch backend gives the follow core: names reported as they appear, and wake-ups for data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

NameChange = Literal["created", "moved_in", "gone"]


@dataclass(frozen=True, slots=True)
class NameEvent:
    """A name that was created in, moved into, or left (moved out, deleted) a watched directory."""

    path: str
    change: NameChange
    cookie: int = 0
    """Pairs the two halves of a rename (moved out, moved in), as inotify reports them."""

    @property
    def appeared(self) -> bool:
        return self.change != "gone"


NamesCallback = Callable[[list[NameEvent]], None]
"""Receives name events in the order the kernel reported them, as soon as it does."""


@dataclass(slots=True)
class Changes:
    """What woke the reader: the paths that changed, whether files may have appeared or vanished, whether
    every file is to be looked at, and whether events were lost (the kernel's queue overflowed), so that a
    file's size alone no longer tells that nothing happened to it."""

    paths: set[str] = field(default_factory=set)
    structure: bool = False
    everything: bool = False
    lost: bool = False


DataCallback = Callable[[Changes], bool]
"""Offered writes (only ``paths``) while the reader waits; True when it served them, and the reader sleeps on."""


class Watcher(Protocol):
    """A source of wake-ups."""

    @property
    def live(self) -> bool:
        """Whether changes are reported as they happen (inotify), not only found by looking (polling)."""

    def start(self, on_names: NamesCallback, on_data: DataCallback | None = None) -> None:
        """Begin reporting new names to ``on_names``, from the running loop, whatever the reader is doing.

        This is what lets a generation created and deleted within milliseconds be opened (and so read from
        its descriptor) before it is gone: it does not wait for the reader to finish what it is doing.
        Writes that come while the reader waits are offered to ``on_data`` first, from the loop or, on a
        :class:`~sidecar.core.loop.LendingLoop`, in its sleep: a backend that reports them as they happen
        wakes the reader only for those it did not serve.
        """

    def watch(self, dirs: set[str]) -> None:
        """Watch exactly these directories from now on."""

    async def wait(self, timeout: float) -> Changes:
        """Return when something changed, or after ``timeout`` seconds with ``everything`` set."""

    def take_queued(self, into: Changes) -> bool:
        """Add the writes reported since into ``into``, without waiting (``on_data`` pausing for more); False
        when a name changed meanwhile (reported by then): the writes may come after it, so they are the
        reader's to serve."""

    def names_now(self) -> None:
        """Report the name events queued so far to ``on_names`` now, from the caller.

        The reader asks before it reads a file of which it knows no byte: while we could not run (SIGSTOP,
        CPU throttling) a copytruncate may have made a copy of content we never saw, and the file's name
        may have moved since; only the events' order tells that copy from a successor, and it must be known
        as a copy before the file's new content is read, or that content comes out first.
        """

    def wake(self) -> None:
        """Make a pending :meth:`wait` return now (used to stop)."""

    def close(self) -> None:
        """Release the backend's resources."""
