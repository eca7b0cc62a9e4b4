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

from sidecar.errors import SidecarError
from sidecar.watch.base import Changes

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
        self._ready = asyncio.Event()
        self._reader_added = False

    def watch(self, dirs: set[str]) -> None:
        for gone in set(self._wds) - dirs:
            self._libc.inotify_rm_watch(self._fd, self._wds.pop(gone))
        for new in dirs - set(self._wds):
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(new), _MASK)
            if wd >= 0:
                self._wds[new] = wd
                self._dirs[wd] = new

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            self._parse(data)
        self._ready.set()

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
        if not self._reader_added:
            asyncio.get_running_loop().add_reader(self._fd, self._drain)
            self._reader_added = True
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), max(timeout, 0.0))
            except TimeoutError:
                return Changes(everything=True)
        changes, self._pending = self._pending, Changes()
        self._ready.clear()
        return changes

    def wake(self) -> None:
        self._pending.everything = True
        self._ready.set()

    def close(self) -> None:
        if self._reader_added:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reader_added = False
        os.close(self._fd)
