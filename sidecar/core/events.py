"""What the follow core reports about its work, without knowing who listens.

The core calls an :class:`Observer`; ``sidecar.observe.metrics`` turns the calls into Prometheus series. Keeping
this a protocol is what lets the core stay free of Prometheus, and lets tests count events directly.
``pattern`` is always the configured glob that found the file, never the file's own name, so that
rotated names cannot explode label cardinality.
"""

from __future__ import annotations

from typing import Literal, Protocol

RotationKind = Literal["rename", "copytruncate", "truncate", "delete", "symlink"]
ROTATION_KINDS: tuple[RotationKind, ...] = ("rename", "copytruncate", "truncate", "delete", "symlink")


class Observer(Protocol):
    """Receives one call per event of the follow core."""

    def file_opened(self, pattern: str) -> None:
        """A file began to be followed."""

    def file_closed(self, pattern: str) -> None:
        """A followed file was read to its end and let go."""

    def rotated(self, pattern: str, kind: RotationKind) -> None:
        """A followed file was rotated away, truncated or deleted."""

    def read(self, pattern: str, lines: int, nbytes: int) -> None:
        """Complete lines were read from a file and handed to the sink."""

    def long_line(self, pattern: str) -> None:
        """A line longer than ``--max-line-bytes`` was split."""

    def read_error(self, pattern: str, reason: str) -> None:
        """A file could not be opened, stat-ed or read; ``reason`` is a short errno-like word."""

    def given_up(self, pattern: str, nbytes: int) -> None:
        """Bytes of a rotated-away file were abandoned unread (held past the rotate limit)."""

    def files_watched(self, count: int) -> None:
        """The number of files currently followed."""

    def backlog(self, nbytes: int, oldest_seconds: float) -> None:
        """Bytes in followed files not yet confirmed by the sink, and how long the oldest has waited."""

    def checkpoint_written(self, ok: bool) -> None:
        """A checkpoint write finished (``ok``) or failed."""


class Liveness(Protocol):
    """Where the file server proves it is alive (``/healthz``) and says it is watching (``/readyz``)."""

    def beat(self) -> None:
        """The reader completed a round, or waits for the sink or the watcher as it should."""

    def set_watching(self, watching: bool) -> None:
        """The reader is in its loop and follows at least one file (readiness waits for the first)."""


class NullObserver:
    """An observer that ignores everything: for driving the core without metrics (tests, embedding)."""

    def file_opened(self, pattern: str) -> None:
        pass

    def file_closed(self, pattern: str) -> None:
        pass

    def rotated(self, pattern: str, kind: RotationKind) -> None:
        pass

    def read(self, pattern: str, lines: int, nbytes: int) -> None:
        pass

    def long_line(self, pattern: str) -> None:
        pass

    def read_error(self, pattern: str, reason: str) -> None:
        pass

    def given_up(self, pattern: str, nbytes: int) -> None:
        pass

    def files_watched(self, count: int) -> None:
        pass

    def backlog(self, nbytes: int, oldest_seconds: float) -> None:
        pass

    def checkpoint_written(self, ok: bool) -> None:
        pass
