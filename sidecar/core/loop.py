"""The event loop the sidecar runs on: one that lends its sleep to a reader thread.

A Python process woken through asyncio for every line written now and then pays the loop's own round
(``epoll_wait``, its Python wrapper, the ready queue, a handle) on top of the line: at 1k lines/s, a tenth
of our CPU (6.11 -> 5.53 % of a core in alternating runs; a bare asyncio reader costs 3.7-4.0 %, the same
work on a lent thread 2.8). :class:`LendingLoop` holds a lock at all times except while it sleeps in
the kernel; a :class:`LentReader` thread blocks on its descriptor itself and, once it has the lock, runs
its callback as if the loop had: nothing the loop owns can change underneath it, since the loop is
asleep, and everything the callback asks of the loop (a future resolved, a timer moved, a task made) is
noted and the loop woken for it afterwards. A line then costs one wake-up of one thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import selectors
import threading
from asyncio.events import _set_running_loop
from collections.abc import Callable
from typing import TypeVarTuple, Unpack

_Ts = TypeVarTuple("_Ts")


class _LendingSelector(selectors.EpollSelector):
    """Lets go of the loop's lock exactly while the loop waits for events."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__()
        self._lock = lock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self._lock.release()
        try:
            return super().select(timeout)
        finally:
            self._lock.acquire()


class LendingLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose sleep other threads may borrow (:meth:`lend`); see the module docstring.

    It is made in, and runs on, the thread that holds its lock from the start.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._borrowed = False
        self._asked = False
        self._lent: list[LentReader] = []
        super().__init__(_LendingSelector(self._lock))

    def call_soon(self, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if self._borrowed:
            self._asked = True
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        if self._borrowed:
            self._asked = True
        return super().call_at(when, callback, *args, context=context)

    def _check_thread(self) -> None:
        """asyncio's debug mode refuses calls from other threads; the borrower's are the loop's own."""
        if not self._borrowed:
            super()._check_thread()  # type: ignore[misc]

    def lend(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` as the loop, in its sleep; False (not run) once the loop is closed. Whatever it
        scheduled wakes the loop afterwards."""
        with self._lock:
            if self.is_closed():
                return False
            self._borrowed = True
            _set_running_loop(self)
            try:
                callback()
            finally:
                _set_running_loop(None)
                self._borrowed = False
                asked, self._asked = self._asked, False
        if asked:
            self.call_soon_threadsafe(_nothing)
        return True

    def add_lent_reader(self, fd: int, callback: Callable[[], None]) -> LentReader:
        """Like ``add_reader``, but ``callback`` runs on a thread of its own while the loop sleeps, and only
        while the reader is armed (:meth:`LentReader.arm`)."""
        reader = LentReader(self, fd, callback)
        self._lent.append(reader)
        return reader

    def close(self) -> None:
        if self.is_closed():
            return
        super().close()
        for reader in self._lent:
            reader.close()
        self._lock.release()  # a reader thread waiting for the loop's sleep learns that it is over


def _nothing() -> None:
    pass


CLOSED_SEEN_WITHIN_MS = 500
"""How long a reader thread waiting for its descriptor may take to see that it was closed: it looks again
this often, rather than hold a descriptor of its own to be woken by (a follower out of descriptors must
still start)."""


class LentReader:
    """A thread that waits for ``fd`` to be readable, then runs ``callback`` in the loop's sleep.

    While disarmed it does not look at the descriptor at all (the kernel keeps merging what comes), as
    ``remove_reader`` would; a callback that raises is reported on the loop like any reader callback's
    exception, and the thread goes on.
    """

    def __init__(self, loop: LendingLoop, fd: int, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._callback = callback
        self._armed = threading.Event()
        self._closed = False
        threading.Thread(target=self._run, name=f"lent-reader-{fd}", daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def disarm(self) -> None:
        self._armed.clear()

    def close(self) -> None:
        """Stop the thread (it ends once it sees this, at the latest when the loop next sleeps or closes)."""
        if self._closed:
            return
        self._closed = True
        self._armed.set()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        lend, armed = self._loop.lend, self._armed
        while not self._closed:
            if not armed.is_set():
                armed.wait()
            elif poller.poll(CLOSED_SEEN_WITHIN_MS) and not lend(self._serve):
                return

    def _serve(self) -> None:
        if self._closed or not self._armed.is_set():  # disarmed while we waited for the loop to sleep
            return
        try:
            self._callback()
        except Exception as exc:  # reported as the loop reports a reader callback's
            self._loop.call_exception_handler(
                {"message": f"Exception in lent reader callback {self._callback!r}", "exception": exc})
