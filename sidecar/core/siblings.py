"""Finding a file's rotated generations beside it (``app.log.1``, ``app.log-20261123``).

Rotation can move content where no glob looks: logrotate's copy in copytruncate, generations renamed
faster than we poll, files rotated while the sidecar was down. They all sit next to the file under a
name that extends its name, which is where :class:`Siblings` looks.
"""

from __future__ import annotations

import bisect
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".z")

SETTLED_NS = 50_000_000
"""A listing is reused only if the directory had not changed for this long when it was taken: a change
made after it then carries a later time than the one the listing saw, even on a coarse file clock."""


@dataclass(frozen=True, slots=True)
class Sibling:
    path: str
    st: os.stat_result


@dataclass(frozen=True, slots=True)
class _Listing:
    mtime_ns: int
    settled: bool
    names: list[str]


class Siblings:
    """Lists the files beside a followed one; one ``stat`` of the directory instead of a listing when it is
    unchanged, so that thousands of files in one directory do not each read the whole directory."""

    def __init__(self) -> None:
        self._listings: dict[str, _Listing] = {}

    def of(self, real_path: str) -> Iterator[Sibling]:
        """Regular files in ``real_path``'s directory whose names extend its name; compressed ones are skipped."""
        directory, base = os.path.split(real_path)
        names = self._names(directory or ".")
        at = bisect.bisect_left(names, base)
        while at < len(names) and names[at].startswith(base):
            name = names[at]
            at += 1
            if name == base or name.lower().endswith(COMPRESSED):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield Sibling(path, st)

    def _names(self, directory: str) -> list[str]:
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            self._listings.pop(directory, None)
            return []
        known = self._listings.get(directory)
        if known is not None and known.settled and known.mtime_ns == mtime:
            return known.names
        taken = time.time_ns()
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return []
        self._listings[directory] = _Listing(mtime, taken - mtime > SETTLED_NS, names)
        return names
