"""When the state file is written: soon after progress, so that even a process that lives half a second
saves what it delivered, and never on the event loop, so that an fsync never stalls reading.

Progress (a ledger moving) is saved at once when the reader has caught up with at least
:data:`SAVE_NOW_BYTES` of it unsaved (at most every :data:`MIN_GAP`, or less often when writing the state
takes long), and otherwise within :data:`PROGRESS_BOUND` of being
committed; a SIGKILL then repeats at most that much of the lines, whatever ``--checkpoint-interval`` says.
Every ``--checkpoint-interval`` the state is rewritten if files came or went since the last write, and
every :data:`REFRESH` even if none did (so ``seen`` times and the checkpoint-age metric stay fresh). Writes
happen one at a time, in a thread of their own that the loop hands the newest entries to and never waits
for (a completion reported back would wake the loop once more per write); the final write at shutdown
waits for any write still under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from sidecar.core.checkpoint import CheckpointStore, Entry
from sidecar.core.events import Observer
from sidecar.core.registry import Registry
from sidecar.errors import CheckpointError
from sidecar.log import get_logger

log = get_logger("sidecar.core")

PROGRESS_BOUND = 0.25
"""Committed progress is on disk at most this long after the commit (plus one write)."""
CAUGHT_UP_DELAY = 0.01
"""After the reader catches up, wait this long for the sink's last commits before writing."""
MIN_GAP = 0.05
"""At most this often after catching up: a trickle of lines catches up on every write, and a state file
per line would cost more than the lines. A crash-looping sidecar repeats about half a gap of lines per kill."""
SAVE_NOW_BYTES = 64 * 1024
"""Catching up saves at once only when at least this much progress is unsaved; less waits for
:data:`PROGRESS_BOUND`. A trickle of 1k lines/s caught up on every line and saved 20 times a second, 1.4 % of
a core (a state file costs ~0.3 ms of CPU in its fsyncs and rename, ~0.7 ms with the thread's and the loop's
share), for the few lines a kill would repeat: it now saves 4 times a second, and a kill repeats at most
0.25 s of lines, as before, or 0.05 s of them (:data:`MIN_GAP`) when they come faster than 64 KiB in that."""
GAP_PER_WRITE = 20
"""...and a gap of at least this many times what the last write took (up to :data:`PROGRESS_BOUND`), so that
writing the state of thousands of files, or to a slow disk, takes a twentieth of the time at most."""
REFRESH = 30.0
"""Rewrite an unchanged state file this often (well inside the checkpoint-stale alert's 120 s)."""


class Checkpointer:
    """Decides when to save; see the module docstring."""

    def __init__(self, store: CheckpointStore, registry: Registry, observer: Observer, interval: float,
                 forget_after: float) -> None:
        self._store = store
        self._registry = registry
        self._observer = observer
        self._interval = interval
        self._forget_after = forget_after
        self._dirty_since: float | None = None
        self._unsaved = 0
        self._kick = asyncio.Event()
        self._waiting: asyncio.Timeout | None = None
        self._writer = _Writer(self._save)
        self._saved_at = 0.0
        self._last_write = 0.0
        self._write_took = 0.0
        self._saved_changes = -1
        self._failing = False

    def progressed(self, moved: int) -> None:
        """A ledger moved by ``moved`` bytes: what is on disk is now behind, and must be saved within
        :data:`PROGRESS_BOUND` even if the reader never catches up (a long backlog): a wait that began
        with nothing unsaved is cut short to that."""
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
            waiting = self._waiting
            if waiting is not None and not waiting.expired():
                due = asyncio.get_running_loop().time() + PROGRESS_BOUND
                when = waiting.when()
                if when is None or due < when:
                    waiting.reschedule(due)
        self._unsaved += moved

    def caught_up(self) -> None:
        """The reader has nothing left to read: a good moment to save, if enough is unsaved."""
        if self._unsaved >= SAVE_NOW_BYTES:
            self._kick.set()

    async def run(self, finished: asyncio.Event) -> None:
        """Save as the module docstring says until ``finished``; a write under way is never abandoned."""
        next_full = time.monotonic() + self._interval
        stopping = asyncio.ensure_future(self._kick_when(finished))
        try:
            while not finished.is_set():
                now = time.monotonic()
                due = next_full if self._dirty_since is None else min(next_full, self._dirty_since + PROGRESS_BOUND)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(due - now, 0.0)) as self._waiting:
                        await self._kick.wait()
                self._waiting = None
                if finished.is_set():
                    return
                if self._kick.is_set():
                    self._kick.clear()
                    gap = min(PROGRESS_BOUND, max(MIN_GAP, GAP_PER_WRITE * self._write_took))
                    await asyncio.sleep(max(CAUGHT_UP_DELAY, self._last_write + gap - time.monotonic()))
                now = time.monotonic()
                full = now >= next_full
                if full:
                    next_full = now + self._interval
                changed = (self._failing or self._registry.changes != self._saved_changes
                           or time.time() - self._saved_at >= REFRESH)
                if self._dirty_since is not None or (full and changed):
                    self._saved_changes = self._registry.changes
                    entries = self._registry.entries(time.time())
                    self._dirty_since = None
                    self._unsaved = 0
                    self._last_write = time.monotonic()
                    self._writer.hand(entries)
                self._writer.check()
        finally:
            stopping.cancel()

    async def _kick_when(self, finished: asyncio.Event) -> None:
        """One waiter on ``finished`` for the whole run: a wait for the next save is then one event and one
        timer, not two tasks (it happens up to 20 times a second while lines trickle in)."""
        await finished.wait()
        self._kick.set()

    def save_final(self) -> None:
        """At shutdown: forget stale entries and write everything, after any write still under way."""
        self._registry.forget_stale(time.time(), self._forget_after)
        entries = self._registry.entries(time.time())
        self._dirty_since = None
        self._unsaved = 0
        self._writer.close(entries)

    def forget_stale(self) -> None:
        self._registry.forget_stale(time.time(), self._forget_after)

    def _save(self, entries: list[Entry | str]) -> None:
        """Runs in the writer thread; only it touches the state file."""
        began = time.monotonic()
        try:
            self._store.save(entries)
        except CheckpointError as exc:
            self._observer.checkpoint_written(False)
            if not self._failing:
                log.error("checkpoint_failed", error=str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("checkpoint_recovered", path=str(self._store.path))
        self._failing = False
        self._saved_at = time.time()
        self._write_took = time.monotonic() - began
        self._observer.checkpoint_written(True)


class _Writer:
    """The thread that writes the state file: it takes the newest entries handed to it (a snapshot of every
    file, so a newer one replaces one not yet written) and writes them, one write at a time. What it raises
    is raised again in the loop (:meth:`check`), which ends the process with it."""

    def __init__(self, save: Callable[[list[Entry | str]], None]) -> None:
        self._save = save
        self._ready = threading.Condition()
        self._next: list[Entry | str] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self._thread.start()

    def hand(self, entries: list[Entry | str]) -> None:
        with self._ready:
            self._next = entries
            self._ready.notify()

    def close(self, entries: list[Entry | str]) -> None:
        """Write ``entries`` last, after any write under way, and end the thread."""
        with self._ready:
            self._next = entries
            self._closing = True
            self._ready.notify()
        self._thread.join()
        self.check()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._next is None and not self._closing:
                    self._ready.wait()
                entries, self._next = self._next, None
                last = self._closing
            try:
                if entries is not None:
                    self._save(entries)
            except BaseException as exc:  # raised again in the loop, which ends the process with it
                self._error = exc
                return
            if last:
                return
