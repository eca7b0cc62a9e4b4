"""The inotify backend, on the kernel's interface through ctypes (no extra dependency).

Directories are watched, not files: a directory watch sees creates, renames and deletes of its
entries as well as writes to them, and survives the rotations that would orphan a per-file watch.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct

from sidecar.core.watch.base import Changes
from sidecar.errors import SidecarError

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
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_STRUCTURE = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB
_MASK = _STRUCTURE | IN_MODIFY | IN_CLOSE_WRITE
_HEADER = struct.Struct("iIII")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InotifyUnavailable(SidecarError):
    """The kernel or the C library offers no inotify here; use ``--watch poll``."""


class InotifyWatcher:
    """Wakes the core on events in the watched directories, and at least every ``timeout``."""

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c")
        try:
            self._libc = ctypes.CDLL(libc_name, use_errno=True)
            fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError) as exc:
            raise InotifyUnavailable(f"inotify is not available: {exc}; use --watch poll") from exc
        if fd < 0:
            raise InotifyUnavailable(
                f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}; raise fs.inotify.max_user_instances "
                "or use --watch poll"
            )
        self._fd: int = fd
        self._wds: dict[str, int] = {}
        self._dirs: dict[int, str] = {}
        self._pending = Changes()
        self._has_events = False
        self._waiter: asyncio.Future[None] | None = None

    def watch(self, dirs: set[str]) -> None:
        for gone in set(self._wds) - dirs:
            self._libc.inotify_rm_watch(self._fd, self._wds.pop(gone))
        for new in dirs - set(self._wds):
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(new), _MASK)
            if wd >= 0:
                self._wds[new] = wd
                self._dirs[wd] = new

    def _drain(self) -> None:
        """Read every queued event without blocking."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            self._parse(data)
            self._has_events = True

    def _parse(self, data: bytes) -> None:
        pos = 0
        while pos + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
            name = data[pos + _HEADER.size : pos + _HEADER.size + length].rstrip(b"\0")
            pos += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                self._pending.everything = True
                continue
            if mask & IN_IGNORED:
                gone = self._dirs.pop(wd, None)
                if gone is not None and self._wds.get(gone) == wd:
                    del self._wds[gone]
                self._pending.structure = True
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & _STRUCTURE:
                self._pending.structure = True
            self._pending.paths.add(os.path.join(directory, os.fsdecode(name)) if name else directory)

    async def wait(self, timeout: float) -> Changes:
        """Wait for the inotify descriptor to become readable, then read what it queued.

        The descriptor is watched only while we wait: between waits the kernel queues (and merges)
        events, so a stream of writes costs one wake-up per read round, not one per write.
        """
        self._drain()
        if not self._has_events:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            loop.add_reader(self._fd, _resolve, waiter)
            timer = loop.call_later(max(timeout, 0.0), _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                loop.remove_reader(self._fd)
                self._waiter = None
            self._drain()
            if not self._has_events:
                return Changes(everything=True)
        changes, self._pending = self._pending, Changes()
        self._has_events = False
        return changes

    def wake(self) -> None:
        self._pending.everything = True
        self._has_events = True
        if self._waiter is not None:
            _resolve(self._waiter)

    def close(self) -> None:
        os.close(self._fd)
