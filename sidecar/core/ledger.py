"""Which bytes of one file generation the sink has confirmed.

Agent mode has several chunks in flight and acks may complete in any order; a checkpoint may still
only point past a prefix that is entirely confirmed. The ledger turns out-of-order commits into that
in-order position, and tells the checkpointer each time it moves, and by how many bytes.
"""

from __future__ import annotations

from collections.abc import Callable

_COMPACT_AFTER = 64
"""Settled batches kept at the front of the list before it is cut (agent mode has many out per file)."""


def _nothing(moved: int) -> None:
    pass


class Ledger:
    """Which bytes of one file generation the sink has confirmed, advanced strictly in file order.

    The batches out are a plain list read from ``_next`` on (not a deque: following thousands of files,
    each usually has one batch out at a time, and a deque costs ~600 bytes to a short list's ~90).
    """

    __slots__ = ("_next", "_on_advance", "_pending", "committed")

    def __init__(self, committed: int, on_advance: Callable[[int], None] = _nothing) -> None:
        self.committed = committed
        self._pending: list[list[int]] | None = None  # only while batches are out: idle files need none
        self._next = 0
        self._on_advance = on_advance

    def add(self, end: int) -> Callable[[], None]:
        """Register a batch ending at ``end``; the returned callable commits it."""
        entry = [end, 0]
        if self._pending is None:
            self._pending, self._next = [], 0
        pending = self._pending
        pending.append(entry)

        def commit() -> None:
            entry[1] = 1
            if self._pending is not pending:
                return
            done = start = self._next
            while done < len(pending) and pending[done][1]:
                done += 1
            if done == start:
                return
            moved = pending[done - 1][0] - self.committed
            self.committed += moved
            if done == len(pending):
                self._pending = None
            elif done > _COMPACT_AFTER:
                del pending[:done]
                done = 0
            self._next = done
            self._on_advance(moved)

        return commit

    def advance(self, end: int) -> None:
        """The bytes up to ``end`` were made safe at once, with no batch out (see :attr:`idle`): move there."""
        moved = end - self.committed
        self.committed = end
        self._on_advance(moved)

    @property
    def idle(self) -> bool:
        return self._pending is None
