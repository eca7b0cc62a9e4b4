"""Which bytes of one file generation the sink has confirmed.

Agent mode has several chunks in flight and acks may complete in any order; a checkpoint may still
only point past a prefix that is entirely confirmed. The ledger turns out-of-order commits into that
in-order position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Ledger:
    """Which bytes of one file generation the sink has confirmed, advanced strictly in file order."""

    __slots__ = ("_pending", "committed")

    def __init__(self, committed: int) -> None:
        self.committed = committed
        self._pending: deque[list[int]] = deque()

    def add(self, end: int) -> Callable[[], None]:
        """Register a batch ending at ``end``; the returned callable commits it."""
        entry = [end, 0]
        self._pending.append(entry)

        def commit() -> None:
            entry[1] = 1
            while self._pending and self._pending[0][1]:
                self.committed = self._pending.popleft()[0]

        return commit

    @property
    def idle(self) -> bool:
        return not self._pending
