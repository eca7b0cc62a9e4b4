"""Knowing a file by what it is, not by what it is called.

A file is the pair (device, inode) plus a fingerprint of its first bytes. The inode follows a file
through renames and symlink swaps; the fingerprint tells a reused inode, or a file truncated and
rewritten in place, from the file we knew; and it recognises a copy (copytruncate) by its content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import NamedTuple

FP_BYTES = 256
"""How many leading bytes identify content. Enough to hold a timestamp and some text of the first lines."""


class FileKey(NamedTuple):
    """Device and inode: stable across renames, reused after a delete. A tuple, so that hashing and comparing
    one (every index of the registry is keyed by it, thousands of times per sweep) runs in C."""

    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_dev, st.st_ino)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A hash of a file's first ``length`` bytes (fewer than :data:`FP_BYTES` while the file is small)."""

    digest: str
    length: int

    @classmethod
    def of(cls, head: bytes) -> Fingerprint:
        head = head[:FP_BYTES]
        return cls(_digest(head), len(head))

    @property
    def complete(self) -> bool:
        return self.length >= FP_BYTES

    def matches(self, head: bytes) -> bool:
        """Whether ``head`` (a file's first bytes) starts with the content this fingerprint was taken of."""
        return len(head) >= self.length and _digest(head[: self.length]) == self.digest


MARK_BYTES = 64
"""How many bytes just before a position are remembered as its marker."""


def mark_of(data: bytes) -> str:
    """The digest kept for the bytes just before a position."""
    return _digest(data)


def mark_matches(fd: int, offset: int, mark: str, length: int) -> bool:
    """Whether the ``length`` bytes before ``offset`` on ``fd`` are the ones ``mark`` was taken of."""
    if not length:
        return True
    if offset < length:
        return False
    return _digest(os.pread(fd, length, offset - length)) == mark


def read_head(fd: int) -> bytes:
    """The bytes a fingerprint is taken of."""
    return os.pread(fd, FP_BYTES, 0)


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def open_for_reading(path: str) -> int:
    """A descriptor to read ``path`` without updating its access time where we may (we own the file, or
    hold CAP_FOWNER): the first read after each write would otherwise dirty the inode, a journal write from
    the event loop, which waits behind the filesystem's commit when the disk is busy."""
    try:
        return os.open(path, _READ_FLAGS | os.O_NOATIME)
    except PermissionError:
        return os.open(path, _READ_FLAGS)


def read_head_of(path: str) -> bytes | None:
    """The head of a file we do not hold open (a sibling); None when it cannot be read."""
    try:
        fd = open_for_reading(path)
    except OSError:
        return None
    try:
        return read_head(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
