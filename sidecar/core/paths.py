"""Which files to follow: globs minus excludes, and which directories to watch for new ones.

Discovery is a plain rescan, cheap enough to run on every directory event and every poll tick; the
identity layer, not this one, decides whether a path is a file we already know.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple


class Found(NamedTuple):
    """A path matched by ``pattern`` (symlinks not yet resolved); a tuple, made for every file every sweep."""

    path: str
    pattern: str


class PathsProvider:
    """Expands the configured globs; an exclude without ``/`` matches the file name, else the whole path."""

    def __init__(self, patterns: tuple[str, ...], excludes: tuple[str, ...] = ()) -> None:
        self.patterns = tuple(os.path.abspath(p) for p in patterns)
        self._excludes = excludes
        self._listers = tuple(_lister(p) for p in self.patterns)

    def excluded(self, path: str) -> bool:
        if not self._excludes:
            return False
        name = os.path.basename(path)
        return any(fnmatch.fnmatch(name if "/" not in ex else path, ex) for ex in self._excludes)

    def scan(self) -> Iterator[Found]:
        """Every path the globs match now, first pattern first, each path once."""
        seen: set[str] = set()
        for pattern, lister in zip(self.patterns, self._listers, strict=True):
            for path in sorted(lister()):
                if path not in seen and not self.excluded(path):
                    seen.add(path)
                    yield Found(path, pattern)

    def match(self, path: str) -> str | None:
        """The first pattern that matches ``path`` (as a scan would find it), or None; excludes apply.

        Used for a name the watcher reports, so it need not rescan every glob. Like ``glob``, a wildcard
        does not match a leading dot unless the pattern's name starts with one.
        """
        if self.excluded(path):
            return None
        hidden = os.path.basename(path).startswith(".")
        for pattern in self.patterns:
            if hidden and not os.path.basename(pattern).startswith("."):
                continue
            if fnmatch.fnmatchcase(path, pattern) and (pattern.count(os.sep) == path.count(os.sep) or "**" in pattern):
                return pattern
        return None

    def literal_paths(self) -> list[str]:
        """The patterns that name one file (no wildcard): their generations can be looked for by name."""
        return [p for p in self.patterns if not glob.has_magic(p)]

    def watch_dirs(self) -> set[str]:
        """Directories whose events can reveal a new matching file: each glob's fixed prefix and the levels below."""
        dirs: set[str] = set()
        for pattern in self.patterns:
            parts = os.path.dirname(pattern).split(os.sep)
            fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            for depth in range(max(fixed, 2), len(parts) + 1):
                level = os.sep.join(parts[:depth])
                dirs.update(d for d in glob.glob(level, recursive=True) if _is_dir(d))
        return dirs


def _lister(pattern: str) -> Callable[[], list[str]]:
    """What ``glob.glob(pattern)`` gives, made cheaper for the usual pattern (wildcards in the file name only):
    one directory listing matched against the name's compiled pattern, as ``glob`` does but without joining
    each path in Python (a sweep lists thousands of files every few seconds)."""
    directory, name = os.path.split(pattern)
    if glob.has_magic(directory) or not glob.has_magic(name) or "**" in name:
        return lambda: glob.glob(pattern, recursive=True)
    match = re.compile(fnmatch.translate(name)).match
    hidden = name.startswith(".")

    def listed() -> list[str]:
        try:
            with os.scandir(directory) as entries:
                return [e.path for e in entries if match(e.name) and (hidden or not e.name.startswith("."))]
        except OSError:
            return []

    return listed


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False
