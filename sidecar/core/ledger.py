"""Which bytes of one file generation the sink has confirmed.

Agent mode has several chunks in flight and acks may complete in any order; a checkpoint may still
only point past a prefix that is entirely confirmed. The ledger turns out-of-order commits into that
in-order position, and tells the checkpointer each time it moves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


def _nothing() -> None:
    pass


class Ledger:
    """Which bytes of one file generation the sink has confirmed, advanced strictly in file order."""

    __slots__ = ("_on_advance", "_pending", "committed")

    def __init__(self, committed: int, on_advance: Callable[[], None] = _nothing) -> None:
        self.committed = committed
        self._pending: deque[list[int]] | None = None  # only while batches are out: idle files need none
        self._on_advance = on_advance

    def add(self, end: int) -> Callable[[], None]:
        """Register a batch ending at ``end``; the returned callable commits it."""
        entry = [end, 0]
        if self._pending is None:
            self._pending = deque()
        pending = self._pending
        pending.append(entry)

        def commit() -> None:
            entry[1] = 1
            moved = False
            while pending and pending[0][1]:
                self.committed = pending.popleft()[0]
                moved = True
            if not pending and self._pending is pending:
                self._pending = None
            if moved:
                self._on_advance()

        return commit

    @property
    def idle(self) -> bool:
        return not self._pending
