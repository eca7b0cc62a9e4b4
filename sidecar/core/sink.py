"""The seam between the follow core and a mode: batches of complete lines, and the sink that takes them.

The core reads files and hands each run of complete lines to a :class:`Sink` as a :class:`Batch`. The
sink decides when the bytes are safe (written to stdout, acknowledged by a receiver) and says so with
:meth:`Batch.commit`; only then may the checkpoint move past them. That single rule is what makes
stream mode lose nothing and agent mode at-least-once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FileRef:
    """Which file generation a batch came from: the file's identity, never its name.

    ``generation`` counts the times the same inode was truncated and rewritten. Sinks key per-file state
    (multiline groups, ordering) by this, so a renamed file and its successor under the same name are
    never mixed up.
    """

    dev: int
    ino: int
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """Where a batch came from: its file generation, the file's path when it was found, and the glob that found it."""

    path: str
    pattern: str
    file: FileRef = FileRef(0, 0)


class Batch:
    """Complete lines, each ending in ``\\n``, read from one file in file order.

    ``data`` points into the core's read buffer and is valid only until :meth:`Sink.emit` returns: a sink
    that keeps lines longer (agent mode) copies or encodes them first. When ``offset >= 0``, ``data`` is
    byte for byte the file range starting there on descriptor ``fd``, so a sink may copy it in the kernel
    (``os.sendfile``) instead; ``offset == -1`` marks bytes the core made (a split long line).
    """

    __slots__ = ("commit", "data", "fd", "lines", "offset", "source")

    def __init__(
        self,
        source: Source,
        data: memoryview,
        lines: int,
        fd: int,
        offset: int,
        on_commit: Callable[[], None],
    ) -> None:
        self.source = source
        self.data = data
        self.lines = lines
        self.fd = fd
        self.offset = offset
        self.commit = on_commit
        """Declare these lines safe: the checkpoint may move past them (in file order)."""


class Sink(Protocol):
    """Where a mode takes the lines."""

    @property
    def reads_descriptor(self) -> bool:
        """Whether :meth:`emit` reads ``batch.fd`` while it waits (stream mode's ``sendfile``); a sink that
        copies the bytes first (agent mode) lets the core close a given-up file while emit still waits."""

    async def emit(self, batch: Batch) -> None:
        """Take a batch; wait here to apply backpressure. Commit now or later."""

    def offer(self, batch: Batch) -> bool:
        """Take a batch only if that needs no waiting; False leaves it untaken, for :meth:`emit`.

        The core's quick path (a write served while the reader waits, as the loop would) hands lines over
        this way: a wake-up of the reader task costs more than the line. A sink holding back (a full window)
        says no, and the reader then waits in :meth:`emit` as usual.
        """

    def write_now(self, source: Source, data: memoryview, lines: int) -> bool:
        """Write ``data`` (complete lines of ``source``) whole at once, or refuse it without taking any: True
        means the lines are safe, and the caller moves the file's position past them itself.

        The quick path's shortcut for a line or a few, with nothing of the file out: no batch to make, gather
        or commit (at 1k lines/s, 7.8-9.8 -> 7.3-7.8 % of a core). A sink that cannot make lines safe at
        once (agent mode waits for acks) refuses, and the lines go the usual way (:meth:`offer`).
        """

    async def flush(self) -> None:
        """The reader has nothing more for now: a sink that gathers small batches into one write does it now."""

    def flush_now(self) -> bool:
        """:meth:`flush` as far as it goes without waiting; True when nothing is left for it to do."""

    async def drain(self, timeout: float) -> None:
        """At shutdown: wait up to ``timeout`` seconds for everything emitted to be committed."""
