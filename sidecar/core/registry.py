"""Every file the core knows: the open ones in reading order, and the saved positions of the ones let go.

Order is the promise "old before new": a rotated generation, or a copy's missing range, is read before
the file that now holds the name. Only the registry changes that order, so it cannot be broken from
elsewhere; and only it closes descriptors, after the sink has let go of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from sidecar.core.checkpoint import Entry
from sidecar.core.events import Observer, RotationKind
from sidecar.core.identity import FileKey
from sidecar.core.tail import Tail
from sidecar.log import get_logger

log = get_logger("sidecar.core")


class Registry:
    """Open tails (ordered) and known-but-closed files (by identity)."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer
        self._tails: list[Tail] = []
        self._by_key: dict[FileKey, Tail] = {}
        self._known: dict[FileKey, Entry] = {}
        self.version = 0
        """Bumped whenever the reading order changes."""
        self.changes = 0
        """Bumped whenever a file is added, let go, remembered or forgotten: what a checkpoint holds changed."""
        self._by_name: dict[str, list[Tail]] = {}
        self._rotated: list[Tail] = []
        self._known_paths: dict[str, list[Entry]] | None = None
        """Saved entries by path, built when asked for and dropped whenever the saved ones change."""
        self._disowned: list[Entry] | None = []
        """Entries disowned during start-up (see :meth:`disown`); None once it is over."""
        self._layout: tuple[set[str], dict[str, list[Tail]]] | None = None
        """Directories of the open files, and the files holding names by directory; dropped when files
        come, go or lose their names, so that a poll need not look at every file."""
        self._ranks: dict[Tail, int] | None = None
        """Each open tail's place in reading order, built when asked for and dropped when files come or go:
        sorting a wake-up's files by ``list.index`` scanned the whole list once per file."""

    def __iter__(self) -> Iterator[Tail]:
        """A snapshot: the registry may change while the caller awaits between items."""
        return iter(tuple(self._tails))

    def __len__(self) -> int:
        return len(self._tails)

    def open_tail(self, key: FileKey) -> Tail | None:
        return self._by_key.get(key)

    def knows(self, key: FileKey) -> bool:
        """Open, or let go with a saved position (which includes every copy we have taken bytes from)."""
        return key in self._by_key or key in self._known

    def saved(self, key: FileKey) -> Entry | None:
        return self._known.get(key)

    def saved_entries(self) -> list[Entry]:
        return list(self._known.values())

    def take_saved(self, key: FileKey) -> Entry | None:
        """The saved position of a file about to be reopened (it becomes a tail again)."""
        self.changes += 1
        self._known_paths = None
        return self._known.pop(key, None)

    def disown(self, key: FileKey) -> None:
        """Forget the saved position of a file whose number now names another file (or one that cannot tell:
        ours emptied). Until start-up is over (:meth:`disowned`), the entry is kept for the search of a copy
        of it made while we were down."""
        entry = self.take_saved(key)
        if entry is not None and self._disowned is not None:
            self._disowned.append(entry)

    def disowned(self) -> list[Entry]:
        """The entries disowned during start-up and not claimed since (a snapshot)."""
        return list(self._disowned or ())

    def claim_disowned(self, entry: Entry) -> None:
        """A copy of a disowned file was found and follows on from its position."""
        if self._disowned is not None:
            self._disowned.remove(entry)

    def end_startup(self) -> list[Entry]:
        """The entries still disowned; from now on, disowned ones are simply forgotten."""
        entries, self._disowned = self._disowned or [], None
        return entries

    def remember(self, entry: Entry) -> None:
        """Keep a position for a file that is not open (a copy consumed, a file let go, the state file's)."""
        self._known[FileKey(entry.dev, entry.ino)] = entry
        self._known_paths = None
        self.changes += 1

    def add(self, tail: Tail, before: Tail | None = None) -> None:
        """Follow ``tail``, last or just before ``before`` (a newer file)."""
        if before is not None and before in self._tails:
            self._tails.insert(self._tails.index(before), tail)
        else:
            self._tails.append(tail)
        self.version += 1
        self.changes += 1
        self._ranks = None
        self._by_key[tail.key] = tail
        for name in {tail.path, tail.real}:
            self._by_name.setdefault(name, []).append(tail)
        if tail.rotated is not None:
            self._rotated.append(tail)
        if self._known.pop(tail.key, None) is not None:
            self._known_paths = None
        self._layout = None
        self._observer.file_opened(tail.pattern)
        log.info("file_opened", path=tail.path, inode=tail.key.ino, offset=tail.pos)

    def let_go(self, tail: Tail, kind: RotationKind) -> None:
        """``tail``'s name moved on: it is read to its end in every round from now on."""
        tail.let_go(kind)
        self._rotated.append(tail)
        self._layout = None

    def directories(self) -> set[str]:
        """The directories the open files are in, by name and by real path (do not change the set)."""
        return self._laid_out()[0]

    def holding_names(self) -> dict[str, list[Tail]]:
        """The open files that still hold their names, by real directory (do not change it)."""
        return self._laid_out()[1]

    def _laid_out(self) -> tuple[set[str], dict[str, list[Tail]]]:
        if self._layout is None:
            dirs = {os.path.dirname(p) for t in self._tails for p in (t.path, t.real)}
            by_dir: dict[str, list[Tail]] = {}
            for tail in self._tails:
                if tail.rotated is None:
                    by_dir.setdefault(os.path.dirname(tail.real), []).append(tail)
            self._layout = dirs, by_dir
        return self._layout

    def _rank(self) -> dict[Tail, int]:
        if self._ranks is None:
            self._ranks = {tail: place for place, tail in enumerate(self._tails)}
        return self._ranks

    @property
    def has_rotated(self) -> bool:
        return bool(self._rotated)

    def rotated(self) -> list[Tail]:
        """The open files whose names moved on (a snapshot)."""
        return list(self._rotated)

    def to_read(self, names: set[str], hot: Iterable[Tail]) -> list[Tail]:
        """In reading order: the files still busy, the rotated ones, and those the watcher named.

        Built from indexes, not by looking at every file: with thousands of quiet files, a wake-up for one
        line costs the same as with one.
        """
        if len(names) == 1 and not hot and not self._rotated:  # a line now and then: one name, one file
            (name,) = names
            named = self._by_name.get(name, ())
            if len(named) == 1:
                tail = named[0]
                return [tail] if tail.fd >= 0 and self._by_key.get(tail.key) is tail else []
        chosen = {*hot, *self._rotated}
        for name in names:
            chosen.update(self._by_name.get(name, ()))
        if len(chosen) * 16 > len(self._tails):
            return [t for t in self._tails if t in chosen and t.fd >= 0]
        live = [t for t in chosen if t.fd >= 0 and self._by_key.get(t.key) is t]
        return sorted(live, key=self._rank().__getitem__)

    def written_after(self, family: str, mtime_ns: int, newest: Tail | None) -> Tail | None:
        """What a file of ``family`` last written at ``mtime_ns`` goes just before (None: after every file):
        the first, in reading order, of the family's files written after it (rotated ones, and those we
        think hold the name but whose rename we may not have looked at yet), or ``newest``, the file that
        holds the name as far as we know, unless even that was last written before it. A generation found
        late (it was between names when an earlier search looked) is older than those found or opened
        before it; one found as the search of a newcomer begins may be newer than the newcomer, renamed on
        since it was opened."""
        later = [t for t in self._rotated if t.family == family and _written(t) > mtime_ns]
        later += [t for t in self._by_name.get(family, ()) if t.rotated is None and t is not newest
                  and t.family == family and _written(t) > mtime_ns]
        if newest is not None and self._by_key.get(newest.key) is newest and _written(newest) >= mtime_ns:
            later.append(newest)
        return min(later, key=self._rank().__getitem__) if later else None

    def first_beside(self, path: str, mtime_ns: int) -> Tail | None:
        """The first, in reading order, of the open files named ``path`` or a name extending it (``app.log.1``)
        that were last written no earlier than ``mtime_ns``: what a copy of ``path``'s file found late, last
        written then, goes just before. Only start-up asks (a copy of a disowned file), so it looks at every file."""
        directory, name = os.path.split(path)
        for tail in self._tails:
            where, called = os.path.split(tail.real)
            if where == directory and called.startswith(name) and _written(tail) >= mtime_ns:
                return tail
        return None

    def holder_for(self, path: str) -> Tail | None:
        """The newest followed file that still holds the name ``path`` is, or extends (``app.log`` for
        ``app.log.1``): generations found beside it go just before it."""
        for named in self.extended_by(path, strict=False):
            holders = [t for t in named if t.rotated is None]
            if holders:
                return max(holders, key=self._rank().__getitem__) if len(holders) > 1 else holders[0]
        return None

    def links_to(self, real: str) -> list[str]:
        """The followed symlinks that named ``real`` when they were last resolved."""
        return sorted({t.path for t in self._by_name.get(real, ()) if t.real == real and t.path != real})

    def targets_before(self, tail: Tail) -> list[Tail]:
        """The rotated files followed by ``tail``'s symlink before it named ``tail``, one per old target."""
        older = {t.real: t for t in self._by_name.get(tail.path, ())
                 if t.path == tail.path and t.real != tail.real and t.rotated is not None}
        return list(older.values())

    def extended_by(self, path: str, strict: bool = True) -> Iterator[list[Tail]]:
        """Open files beside ``path`` whose names it extends (``app.log`` for ``app.log.1``; with ``strict``
        false, its own name too), longest name first, one list per name: found by looking up each prefix,
        not by looking at every file, so that opening thousands of files costs no more than one each."""
        for real in _names_extended_by(path, strict):
            named = [t for t in self._by_name.get(real, ()) if t.real == real]
            if named:
                yield named

    def saved_extended_by(self, path: str) -> list[Entry]:
        """Saved files beside ``path`` whose names it strictly extends (see :meth:`extended_by`)."""
        if self._known_paths is None:
            self._known_paths = {}
            for entry in self._known.values():
                self._known_paths.setdefault(entry.path, []).append(entry)
        found: list[Entry] = []
        for name in _names_extended_by(path, strict=True):
            found += self._known_paths.get(name, ())
        return found

    def release(self, tail: Tail, skip_to: int = 0) -> None:
        """Close ``tail`` and keep its position while the file exists; the caller knows the sink no longer
        reads the descriptor (:attr:`sidecar.core.sink.Sink.reads_descriptor`)."""
        try:
            alive = os.fstat(tail.fd).st_nlink > 0
        except OSError:
            alive = False
        os.close(tail.fd)
        tail.fd = -1
        self.changes += 1
        self._layout = None
        self._ranks = None
        self._tails.remove(tail)
        for name in {tail.path, tail.real}:
            named = self._by_name[name]
            named.remove(tail)
            if not named:
                del self._by_name[name]
        if tail in self._rotated:
            self._rotated.remove(tail)
        del self._by_key[tail.key]
        if alive:
            entry = tail.entry(time.time())
            entry.offset = max(entry.offset, skip_to)
            self._known[tail.key] = entry
            self._known_paths = None
        self._observer.file_closed(tail.pattern)
        log.info("file_closed", path=tail.path, inode=tail.key.ino, offset=tail.ledger.committed)

    def entries(self, now: float) -> list[Entry | str]:
        """What a checkpoint holds: every open file's committed position (rendered), then the saved ones."""
        seen = repr(now)
        return [*(t.entry_text(seen) for t in self._tails), *self._known.values()]

    def forget_stale(self, now: float, forget_after: float) -> None:
        """Drop saved positions of files gone from their path for ``forget_after``; refresh the others."""
        for key, entry in list(self._known.items()):
            try:
                present = FileKey.of(os.stat(entry.path)) == key
            except OSError:
                present = False
            if present:
                entry.seen = now
            elif now - entry.seen > forget_after:
                del self._known[key]
                self._known_paths = None
                self.changes += 1

    def close_all(self) -> None:
        for tail in self._tails:
            os.close(tail.fd)
            tail.fd = -1


def _written(tail: Tail) -> int:
    """When the file's content last changed (0 when its descriptor cannot say)."""
    try:
        return os.fstat(tail.fd).st_mtime_ns if tail.fd >= 0 else 0
    except OSError:
        return 0


def _names_extended_by(path: str, strict: bool) -> Iterator[str]:
    """The paths beside ``path`` whose names ``path``'s name extends (with ``strict`` false, ``path`` too),
    longest first: ``/d/app.log.1`` gives ``/d/app.log.``, ``/d/app.log``, ... ``/d/a``."""
    directory, name = os.path.split(path)
    for length in range(len(name) - 1 if strict else len(name), 0, -1):
        yield os.path.join(directory, name[:length])
