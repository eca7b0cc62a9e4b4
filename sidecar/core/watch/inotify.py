"""The inotify backend, on the kernel's interface through ctypes (no extra dependency).

Directories are watched, not files: a directory watch sees creates, renames and deletes of its entries as
well as writes to them, and survives the rotations that would orphan a per-file watch.

Two inotify instances share the directory list, because the two kinds of event want opposite handling:

- *names* (create, move, delete) are read the moment the kernel queues them, from the event loop's reader
  callback, and reported at once: a generation that lives for milliseconds must be opened before it is
  deleted, even while the reader is busy or held back by the sink;
- *data* (writes) is read only while the reader waits (its own thread, or the loop, reports it then), so
  that while the reader is busy the kernel merges a stream of writes into few events and a busy file costs
  one wake-up per read round, not one per write.

The data instance hears of names too, in the order they came among the writes, and only for that: a write
read after a name changed is not served before the names instance was read.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
import sys

from sidecar.core.loop import LendingLoop, LentReader
from sidecar.core.watch.base import Changes, DataCallback, NameChange, NameEvent, NamesCallback
from sidecar.errors import SidecarError
from sidecar.log import get_logger

log = get_logger("sidecar.core")

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_NEW_NAME = IN_MOVED_TO | IN_CREATE
_GONE_NAME = IN_MOVED_FROM | IN_DELETE
_NAMES_MASK = _NEW_NAME | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB
_DATA_MASK = IN_MODIFY | IN_CLOSE_WRITE | _NAMES_MASK
_HEADER = struct.Struct("iIII")
_NOT_A_WRITE = IN_Q_OVERFLOW | IN_IGNORED | _NAMES_MASK
_READ_BYTES = 65536
_LARGEST_EVENT = _HEADER.size + 256
"""An event's header and the longest name (255 bytes and its NUL)."""
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_TIMER_SLACK = 0.001
"""A timeout this close to its deadline counts as due (the loop runs timers up to its clock resolution early)."""


class InotifyUnavailable(SidecarError):
    """The kernel or the C library offers no inotify here; use ``--watch poll``."""


class _Instance:
    """One inotify descriptor and its directory watches."""

    def __init__(self, libc: ctypes.CDLL, mask: int, reports_names: bool) -> None:
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise InotifyUnavailable(
                f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}; raise fs.inotify.max_user_instances "
                "or use --watch poll"
            )
        self._libc = libc
        self._mask = mask
        self.fd: int = fd
        self._wds: dict[str, int] = {}
        self._dirs: dict[int, tuple[str, str]] = {}
        """By watch: the directory, and what its entries' paths begin with (concatenating and decoding a
        name in C costs a third of ``os.path.join`` and ``os.fsdecode``, paid per event with thousands of files)."""
        self._last: tuple[int, bytes, str] = (-1, b"", "")
        self._reports_names = reports_names
        self.names_seen = False
        """Set by a name event in an instance that does not report names: the names instance has news."""

    def watch(self, dirs: set[str]) -> dict[str, int]:
        """Watch exactly ``dirs``; returns those that could not be watched, with the errno why."""
        for gone in set(self._wds) - dirs:
            self._libc.inotify_rm_watch(self.fd, self._wds.pop(gone))
        failed = {}
        for new in dirs - set(self._wds):
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(new), self._mask)
            if wd >= 0:
                self._wds[new] = wd
                self._dirs[wd] = new, new if new.endswith("/") else new + "/"
            else:
                failed[new] = ctypes.get_errno()
        return failed

    def read(self, into: Changes, names: list[NameEvent] | None = None) -> bool:
        """Read every queued event without blocking into ``into`` (new names also into ``names``).

        A read that left room for another event took the whole queue: no second call to learn so."""
        got = False
        while True:
            try:
                data = os.read(self.fd, _READ_BYTES)
            except BlockingIOError:
                return got
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            got = True
            self._parse(data, into, names)
            if len(data) <= _READ_BYTES - _LARGEST_EVENT:
                return got

    def _parse(self, data: bytes, into: Changes, names: list[NameEvent] | None) -> None:
        """A file written line by line sends the same (watch, name) pair over and over: its path is kept
        from the event before, not joined and decoded again. Writes are parsed here, in one tight loop;
        every other event is left to :meth:`_other` (a follower of thousands of files parses thousands of
        writes a second: 1.4 -> 1.1 us an event, with names that differ)."""
        pos, last, unpack, add, dirs = 0, len(data) - _HEADER.size, _HEADER.unpack_from, into.paths.add, self._dirs
        last_wd, last_raw, last_path = self._last
        while pos <= last:
            wd, mask, cookie, length = unpack(data, pos)
            start = pos + _HEADER.size
            pos = start + length
            raw = data[start:pos]
            if mask & _NOT_A_WRITE:
                self._last = (last_wd, last_raw, last_path)
                self._other(wd, mask, cookie, raw, into, names)
                last_wd, last_raw, last_path = self._last
            elif wd != last_wd or raw != last_raw:
                watched = dirs.get(wd)
                if watched is not None:
                    last_wd, last_raw, last_path = wd, raw, self._path(watched, raw)
                    add(last_path)
            else:
                add(last_path)
        self._last = (last_wd, last_raw, last_path)

    @staticmethod
    def _path(watched: tuple[str, str], raw: bytes) -> str:
        name = raw.rstrip(b"\0")
        return watched[1] + name.decode(_FS_ENCODING, _FS_ERRORS) if name else watched[0]

    def _other(self, wd: int, mask: int, cookie: int, raw: bytes, into: Changes, names: list[NameEvent] | None
               ) -> None:
        """An event that is not a write: an overflow, a watch gone, a name that changed."""
        if mask & IN_Q_OVERFLOW:
            into.everything = into.lost = True
            return
        if mask & IN_IGNORED:
            self._last = (-1, b"", "")
            gone = self._dirs.pop(wd, None)
            if gone is not None and self._wds.get(gone[0]) == wd:
                del self._wds[gone[0]]
            into.structure = True
            return
        if not self._reports_names:
            self.names_seen = True
            return
        watched = self._dirs.get(wd)
        if watched is None:
            return
        path = self._path(watched, raw)
        self._last = (wd, raw, path)
        into.paths.add(path)
        into.structure = True
        if names is not None and mask & (_NEW_NAME | _GONE_NAME) and not mask & IN_ISDIR:
            change: NameChange = "created" if mask & IN_CREATE else "moved_in" if mask & IN_MOVED_TO else "gone"
            names.append(NameEvent(path, change, cookie))

    def close(self) -> None:
        os.close(self.fd)


class InotifyWatcher:
    """Reports new names at once and wakes the reader on events in the watched directories.

    It is :attr:`live` only while every directory asked for is watched: a directory the kernel refused
    (``fs.inotify.max_user_watches`` reached) reports nothing, so the server then looks every poll interval.
    """

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            self._names = _Instance(libc, _NAMES_MASK, reports_names=True)
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(f"inotify is not available: {exc}; use --watch poll") from exc
        self._data = _Instance(libc, _DATA_MASK, reports_names=False)
        self._pending = Changes()
        self._has_events = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0
        self._on_names: NamesCallback | None = None
        self._on_data: DataCallback | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unwatched: set[str] = set()
        self._data_watched = False
        self._lent: LentReader | None = None

    @property
    def live(self) -> bool:
        return not self._unwatched

    def start(self, on_names: NamesCallback, on_data: DataCallback | None = None) -> None:
        self._on_names = on_names
        self._on_data = on_data
        self._loop = loop = asyncio.get_running_loop()
        loop.add_reader(self._names.fd, self._names_ready)
        if on_data is not None and isinstance(loop, LendingLoop):
            self._lent = loop.add_lent_reader(self._data.fd, self._data_ready)

    def watch(self, dirs: set[str]) -> None:
        failed = self._names.watch(dirs) | self._data.watch(dirs)
        for directory in failed.keys() - self._unwatched:
            log.warning("directory_not_watched", directory=directory, error=os.strerror(failed[directory]),
                        hint="looking every --poll-interval instead; raise fs.inotify.max_user_watches")
        self._unwatched = set(failed)

    def _names_ready(self) -> None:
        self._data.names_seen = False  # every name the data instance may have seen so far is read here
        names: list[NameEvent] = []
        if self._names.read(self._pending, names):
            self._has_events = True
            if names and self._on_names is not None:
                self._on_names(names)
            self._resolve()

    def _resolve(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _drain(self) -> bool:
        got = self._data.read(self._pending)
        if got:
            self._has_events = True
        return got

    def _data_ready(self) -> None:
        """Writes, while the reader waits: offered to ``on_data`` first, and the reader is woken only for what
        it did not serve. A reader busy reading needs no news of them: the descriptor is left alone until it
        waits again, and meanwhile the kernel merges the writes into few events. On a :class:`LendingLoop`
        this runs on the data descriptor's own thread, in the loop's sleep: a line costs no loop round."""
        got = self._drain()
        waiter = self._waiter
        if waiter is None:
            self._disarm()
            return
        if not got:  # what woke us was read meanwhile
            return
        if self._data.names_seen:  # names first: a write must not be served before the rename that came before it
            self._names_ready()
        pending = self._pending
        if (self._on_data is not None and not waiter.done() and not pending.structure and not pending.everything
                and pending.paths and self._on_data(pending)):
            pending.paths.clear()
            self._has_events = False
            return
        self._resolve()

    async def wait(self, timeout: float) -> Changes:
        """Wait for an event, then hand over what was queued; ``everything`` after ``timeout`` without one.

        The data descriptor stays armed from one wait to the next while writes come one at a time (a
        trickle costs no registration per line), and is read at once when it is reported. The
        timeout's timer is not set and cancelled per wait either: one that would fire too early is moved on
        when it fires (:meth:`_timer_fired`), so a wake-up per line costs no timer of its own."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if not self._data_watched:
            self._drain()
            self._arm(loop)
        if not self._has_events:
            self._until = until = loop.time() + max(timeout, 0.0)
            if self._timer is None or self._timer.when() > until:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(until, self._timer_fired)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if not self._has_events:
                return Changes(everything=True)
        changes, self._pending = self._pending, Changes()
        self._has_events = False
        return changes

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._data_watched = True
        if self._lent is not None:
            self._lent.arm()
        else:
            loop.add_reader(self._data.fd, self._data_ready)

    def _disarm(self) -> None:
        self._data_watched = False
        if self._lent is not None:
            self._lent.disarm()
        elif self._loop is not None:
            self._loop.remove_reader(self._data.fd)

    def take_queued(self, into: Changes) -> bool:
        self._data.read(into)
        if self._data.names_seen:
            self._names_ready()
            return False
        return True

    def names_now(self) -> None:
        self._names_ready()

    def _timer_fired(self) -> None:
        """The timeout of the wait that set the timer, which may be an earlier one: a wait still pending and
        not yet due gets the timer again for its own deadline."""
        self._timer = None
        if self._waiter is None or self._loop is None:
            return
        if self._loop.time() < self._until - _TIMER_SLACK:
            self._timer = self._loop.call_at(self._until, self._timer_fired)
        else:
            self._resolve()

    def wake(self) -> None:
        self._pending.everything = True
        self._has_events = True
        self._resolve()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is not None:
            self._loop.remove_reader(self._names.fd)
            if self._lent is not None:
                self._lent.close()
            elif self._data_watched:
                self._loop.remove_reader(self._data.fd)
        self._names.close()
        self._data.close()
