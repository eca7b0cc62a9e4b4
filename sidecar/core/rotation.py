"""Rotation: noticing that a followed file's name or content moved on, and finding what rotation put where
no glob looks.

- A name that now names another file (rename, symlink repointed) or none (delete): the file is read on
  from its descriptor to the end, and the generations created and moved away between two of our looks
  are found beside it (or, for a symlink, beside its old target) and read first, oldest first.
- Content replaced under the same identity (copytruncate, truncate): the bytes we had not read yet are
  in the copy, if there is one; a copy is a new sibling that begins with every byte we know of the file.
  Copies made while we could not look (the pod was CPU-throttled or stopped) hold the generations in
  between; they are read too, in order, before the file's new content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sidecar.core.checkpoint import Entry
from sidecar.core.discovery import Discovery, holds_name, holds_saved, is_prefix, shows_truncation
from sidecar.core.events import Observer, RotationKind
from sidecar.core.identity import FileKey, Fingerprint, read_head
from sidecar.core.registry import Registry
from sidecar.core.siblings import Siblings
from sidecar.core.tail import Tail
from sidecar.core.watch import NameEvent
from sidecar.log import get_logger

log = get_logger("sidecar.core")

MTIME_SLACK = 0.05
"""File times come from the kernel's coarse clock, which may lag ``time.time()`` by a tick."""
SEARCH_OVERLAP = 1.0
"""How far a generation search reaches back before the previous search of the same family."""
COPY_SLACK = 1.0
"""A copy may be made just before our last look, and the truncation just after it."""


_Age = tuple[int, int, int, tuple[int, int, str]]

_NUMBERED = re.compile(r"[._-](\d{1,4})")


def _age_rank(suffix: str) -> tuple[int, int, str]:
    """Order of siblings written, and renamed, within one tick of the file clock: ``.2`` is older than ``.1``
    (numbered rotation shifts old generations up), ``-20261201`` older than ``-20261202`` (dates sort as
    written). Before this, the change time orders them: each shift or rename sets it, oldest first."""
    numbered = _NUMBERED.fullmatch(suffix)
    if numbered is not None:
        return 0, -int(numbered.group(1)), ""
    return 1, 0, suffix


def arrival_order(events: list[NameEvent]) -> dict[str, int]:
    """The files created during ``events``, by the name each has at their end, with the place of its
    creation among them: renames are followed through their cookies, so that a burst of rotations read
    after a stall still tells which generation came first when the file clock (a tick of several
    milliseconds) cannot."""
    arrived: dict[str, int] = {}
    moving: dict[int, int] = {}
    for index, event in enumerate(events):
        if event.change == "created":
            arrived[event.path] = index
        elif event.change == "gone":
            rank = arrived.pop(event.path, None)
            if rank is not None and event.cookie:
                moving[event.cookie] = rank
        else:
            rank = moving.pop(event.cookie, None) if event.cookie else None
            if rank is None:
                arrived.pop(event.path, None)
            else:
                arrived[event.path] = rank
    return arrived


def _copy_of_what_we_knew(tail: Tail, candidates: list[_Candidate]) -> int | None:
    """Which of ``candidates`` (oldest first) holds the bytes a truncation took from ``tail``: the newest that
    begins with every byte we know of it (the first, when we knew none), or None."""
    if tail.fp.length == 0 and tail.pos == 0:
        return 0 if candidates else None
    matching = [i for i, c in enumerate(candidates) if tail.holds_known_bytes(c.fd, c.st.st_size)]
    return matching[-1] if matching else None


def _copies_since(tail: Tail) -> float:
    """Siblings changed before this cannot be copies holding bytes of ``tail`` we have not read."""
    return max(tail.looked_at - COPY_SLACK, tail.known_since)


def _own_names(candidates: list[_Candidate], directory: str) -> frozenset[str]:
    """Those of ``candidates`` whose names extend no other name in ``directory``: a copy is named after its
    original (``app.log.1``, ``0.log.20261201-101500``), so an empty one of these is a file of its own, such
    as a target a link pointed at between two of our looks. Only empty candidates are looked at, and the
    directory is listed again only when there is one (rarely: most candidates hold lines)."""
    empty = [c for c in candidates if c.st.st_size == 0]
    if not empty:
        return frozenset()
    try:
        names = os.listdir(directory)
    except OSError:
        return frozenset()
    own = set()
    for candidate in empty:
        base = os.path.basename(candidate.path)
        if not any(name != base and base.startswith(name) for name in names):
            own.add(candidate.path)
    return frozenset(own)


@dataclass(slots=True)
class _Candidate:
    path: str
    key: FileKey
    fd: int
    st: os.stat_result


class Rotation:
    """See the module docstring."""

    def __init__(self, registry: Registry, discovery: Discovery, observer: Observer) -> None:
        self._registry = registry
        self._discovery = discovery
        self._observer = observer
        self._searched: dict[str, tuple[float, float]] = {}
        """By family: when its last generation search began, and where its first one's window began."""
        self._siblings = Siblings()
        self._arrivals: dict[str, int] = {}

    # -- names ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def arrivals(self, events: list[NameEvent]) -> Iterator[None]:
        """While the watcher's ``events`` are acted on, order the files found within one tick of the file
        clock by when the events say they were created (:func:`arrival_order`)."""
        self._arrivals = arrival_order(events)
        try:
            yield
        finally:
            self._arrivals = {}

    def check_name(self, tail: Tail, known_at: dict[str, FileKey] | None = None) -> None:
        """Has the tail's name been taken from it (rename, delete, symlink repointed)?

        Before it is let go, copies beside it are looked at: it may have been truncated unseen first
        (copytruncate, then a rename), and what the copies hold comes before what it holds now. Of a file
        we read no complete line from, a new sibling is as likely its successor: a few bytes of a first line
        (a timestamp's year) begin every generation's first line too, so taking one for a copy would read a
        newer generation first. That is left to the event order (:meth:`FileServer._on_names`) and to the
        generation search, which read such a sibling whole: nothing of the file was emitted yet.
        """
        if tail.rotated is not None:
            return
        now = time.time()
        try:
            st = os.stat(tail.path)
            same = st.st_ino == tail.key.ino and st.st_dev == tail.key.dev
            if known_at is not None:
                known_at[tail.path] = tail.key if same else FileKey.of(st)
            if same:
                tail.seen_at_path = now
                tail.size = max(tail.size, st.st_size)
                return
        except OSError:
            pass
        if tail.resume:
            self.check_copies(tail, moved_after=True)
        try:
            deleted = os.fstat(tail.fd).st_nlink == 0
        except OSError:
            deleted = True
        relinked = os.path.islink(tail.path) and os.path.realpath(tail.path) != tail.real
        kind: RotationKind = "delete" if deleted else "symlink" if relinked else "rename"
        self._registry.let_go(tail, kind)
        self._observer.rotated(tail.pattern, kind)
        log.info("file_rotated", path=tail.path, kind=kind, inode=tail.key.ino)
        if kind != "symlink":
            self.find_generations(tail.real, tail.pattern, tail.seen_at_path, tail.family)
        if relinked:  # also after a rename or delete: the link may have moved on since
            self._find_targets(tail)

    def find_generations(self, real: str, pattern: str, since: float, family: str) -> None:
        """Generations created and moved away between two of our looks: beside ``real``, written since then.

        They are read from their first byte, oldest first, just before the file that now holds the name.
        The window reaches back before the family's previous search: a generation that still held the
        name then (created, not yet opened, and renamed since) was not a sibling for that search. It never
        reaches back before the family's first window: a file beside it from before we first looked is
        history we never followed (a copy made while we were down), and read now it would come out after
        lines written later.
        """
        started = time.time()
        previous = self._searched.get(family)
        floor = since
        if previous is not None:
            last, floor = previous
            since = min(since, max(last - SEARCH_OVERLAP, floor))
        self._searched[family] = started, floor
        found = self._drop_copies(self._new_siblings(real, since, pattern))
        if found and log.enabled_for_debug():
            log.debug("generation_search", path=real, found=",".join(f"{c.path}@{c.st.st_mtime_ns}" for c in found))
        self._follow_in_order(found, pattern, self._registry.holder_for(real), family, "generation_found")

    def relinked(self, tail: Tail) -> None:
        """A symlink we follow now names ``tail``: the targets it had since the one we followed before are
        looked for as after a repointed link. The old target's name may have moved first (a rotation noticed
        as a rename) and the link after, both between two of our looks: then the file created at the old
        target's name in between was a target too."""
        if tail.path != tail.real:
            for old in self._registry.targets_before(tail):
                self._find_targets(old)

    def _find_targets(self, tail: Tail) -> None:
        """A symlink repointed: follow its new target now, and any target it had between our two looks.

        Those are the files created since in the old target's directory that look like it: its extension in
        their name (``1.log``, and the kubelet's rotated ``1.log.20261201-101500``).
        """
        self._discovery.consider_path(tail.path)
        current = os.path.realpath(tail.path)
        self._follow_targets_between(tail.real, tail.seen_at_path, tail.pattern, current,
                                     self._registry.holder_for(current), tail.family)

    def _follow_targets_between(self, old: str, since: float, pattern: str, current: str, holder: Tail | None,
                                family: str) -> None:
        """The files created since ``since`` in the directory of ``old``, a link's target then, that look
        like it (its extension in their name) and are not ``current``, its target now: followed oldest
        first, before ``holder``."""
        suffix = os.path.splitext(old)[1]
        directory = os.path.dirname(old)
        found = []
        for candidate in self._candidates_in(directory, since - MTIME_SLACK, pattern):
            if candidate.path == current or suffix not in os.path.basename(candidate.path):
                os.close(candidate.fd)
            else:
                found.append(candidate)
        found = self._drop_copies(found, keep_empty=_own_names(found, directory))
        self._follow_in_order(found, pattern, holder, family, "symlink_target_found")

    # -- content -------------------------------------------------------------------------------------

    def check_copies(self, tail: Tail, moved_after: bool = False, only: set[str] | None = None) -> None:
        """A sibling appeared: if it holds bytes this file no longer has, the file was truncated unseen.

        This is how a copytruncate is noticed when the file's size alone cannot show it (we had read
        nothing, or little, and the file has grown again since). Once the file's name has moved, a new
        sibling is its successor rather than its copy, unless we know enough of the file's bytes to tell
        (``moved_after``) or the events name the siblings created while it still held its name (``only``).
        """
        if tail.rotated is not None or tail.fd < 0:
            return
        if not (moved_after or only is not None or holds_name(tail)):
            return
        copied = self._a_new_sibling(tail, only, lambda fd, size: shows_truncation(tail, fd, size))
        if copied:
            try:
                head = read_head(tail.fd)
            except OSError:
                return
            self.truncated(tail, head, only)

    def copied_before_read(self, tail: Tail, knew: Fingerprint) -> bool:
        """``tail`` just read its first chunk, knowing only ``knew`` (nothing) of the file before: was it
        copytruncated between our look for copies and that read? Then a new sibling holds bytes that neither
        begin what we read nor are the start of the file, and we read the new content. The chunk is dropped
        and the truncation handled as :meth:`check_copies` would have before the read: True when it was. Once
        the file's name has moved, a new sibling may be its successor, as there."""
        if not holds_name(tail) or not self._a_new_sibling(
                tail, None, lambda fd, size: not tail.holds_known_bytes(fd, size) and not is_prefix(fd, size, tail.fd)):
            return False
        try:
            head = read_head(tail.fd)
        except OSError:
            return False
        tail.unread(knew)
        self.truncated(tail, head)
        return True

    def _a_new_sibling(self, tail: Tail, only: set[str] | None, holds: Callable[[int, int], bool]) -> bool:
        """Whether a non-empty new sibling of ``tail`` (among ``only``) ``holds`` (descriptor, size) what a copy
        of it would; every sibling opened to ask is closed again."""
        found = False
        for candidate in self._new_siblings(tail.named, _copies_since(tail), tail.pattern, only):
            if not found and candidate.st.st_size > 0:
                with contextlib.suppress(OSError):
                    found = holds(candidate.fd, candidate.st.st_size)
            os.close(candidate.fd)
        return found

    def truncated(self, tail: Tail, head: bytes, only: set[str] | None = None) -> None:
        """The file's content was replaced: finish the old content from its copies, then restart at 0.

        The copy we were reading is the newest new sibling that begins with every byte we know of the file
        (an older one that does too is a stale ``cp``); the siblings newer than it are copies of content we
        never saw, read whole, but for copies of what a file we follow holds now (``logrotate`` seen between
        its copy and its truncation: that content is read from the file). Of a file we knew nothing of, every
        new sibling is such a copy, and so is every one (but copies of files we follow) when none begins
        with what we know: several copytruncates
        while we could not look, and the oldest copy, with what we had read, deleted since (``rotate N``,
        gzip). The copy of what we knew is looked for among all new siblings when none of ``only`` (those
        the events named) is it: a rotation while we were stopped may have renamed it on since.
        """
        resume = tail.resume
        candidates = self._new_siblings(tail.named, _copies_since(tail), tail.pattern, only)
        start = _copy_of_what_we_knew(tail, candidates)
        if start is None and only is not None:
            wider = self._new_siblings(tail.named, _copies_since(tail), tail.pattern)
            start = _copy_of_what_we_knew(tail, wider)
            for unused in wider if start is None else candidates:
                os.close(unused.fd)
            if start is not None:
                candidates = wider
        kind: RotationKind = "truncate"
        between: list[_Candidate] = []
        if start is not None:
            kind = "copytruncate"
            for unused in candidates[:start]:
                os.close(unused.fd)
            copy, between = candidates[start], self._drop_copies(candidates[start + 1 :])
            self._resume_copy(tail, copy, resume)
        else:
            between = self._drop_copies(candidates)
            kind = "copytruncate" if between else kind
        if between:
            holder = tail
            for other in between:
                gen = self._discovery.track(other.path, tail.pattern, other.key, other.fd, 0,
                                            Fingerprint.of(read_head(other.fd)), "copytruncate", before=holder)
                log.info("copytruncate_generation_found", path=tail.path, copy=other.path, inode=gen.key.ino)
        if kind == "truncate" and resume > 0:
            log.warning("file_truncated", path=tail.path, unread_from=resume)
        else:
            log.info("file_rotated", path=tail.path, kind=kind, inode=tail.key.ino)
        self._observer.rotated(tail.pattern, kind)
        tail.restart(head)
        tail.looked_at = time.time()

    def _resume_copy(self, tail: Tail, copy: _Candidate, resume: int) -> None:
        """Read the copy from where we were: it holds the range the truncation took from us.

        A copy that holds just what we read is known at its end, unless some of those lines are not
        delivered yet (a receiver's ack outstanding): then it is followed at its end, on the file's ledger,
        so that its entry is where delivery stands, and a restart reads the rest again from it."""
        size = copy.st.st_size
        if size < resume or (size == resume and tail.ledger.committed >= size):
            os.close(copy.fd)
            self._registry.remember(Entry(copy.key.dev, copy.key.ino, tail.fp.digest, tail.fp.length, size,
                                          copy.path, tail.pattern, time.time()))
            return
        copy_tail = self._discovery.track(copy.path, tail.pattern, copy.key, copy.fd, resume, tail.fp,
                                          "copytruncate", before=tail)
        copy_tail.ledger = tail.ledger
        copy_tail.before = tail.marker_at_resume()
        log.info("copytruncate_recovery", path=tail.path, copy=copy.path, missing_bytes=size - resume)

    # -- helpers -------------------------------------------------------------------------------------

    def _new_siblings(self, real: str, since: float, pattern: str, only: set[str] | None = None
                      ) -> list[_Candidate]:
        """Files beside ``real`` we do not know, changed since ``since`` (among ``only``), opened, oldest first."""
        beside = ((sib.path, sib.st) for sib in self._siblings.of(real))
        found = self._open_unknown(beside, since - MTIME_SLACK, pattern, only)
        base = os.path.basename(real)
        found.sort(key=lambda c: self._age(c.path, c.st, base))
        return found

    def _age(self, path: str, st: os.stat_result, base: str) -> _Age:
        """Sorts files of one family oldest first: by modification time, then, within one tick of the file
        clock, by the events' order of creation, by change time and by name (:func:`_age_rank`)."""
        return (st.st_mtime_ns, self._arrivals.get(path, -1), st.st_ctime_ns,
                _age_rank(os.path.basename(path)[len(base):]))

    def _candidates_in(self, directory: str, since: float, pattern: str) -> list[_Candidate]:
        """Regular files in ``directory`` we do not know, changed since ``since``, opened, oldest first."""
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return []
        files = []
        for item in entries:
            try:
                if item.is_file():
                    files.append((item.path, item.stat()))
            except OSError:
                continue
        found = self._open_unknown(files, since, pattern)
        found.sort(key=lambda c: c.st.st_mtime_ns)
        return found

    def _open_unknown(self, files: Iterable[tuple[str, os.stat_result]], since: float, pattern: str,
                      only: set[str] | None = None) -> list[_Candidate]:
        """Open those of ``files`` (path, stat) that no entry of ours knows and that changed since ``since``.

        A file renamed while we look can be seen under two names (``app.log.1``, then ``app.log.2``): it is
        opened once."""
        found = []
        seen: set[FileKey] = set()
        for path, st in files:
            key = FileKey.of(st)
            if (key in seen or self._registry.open_tail(key) is not None or st.st_mtime < since
                    or (only is not None and path not in only)):
                continue
            seen.add(key)
            opened = self._discovery.open_verified(path, pattern, key)
            if opened is None:
                continue
            if self._known_here(key, path, opened[0], opened[1].st_size):
                os.close(opened[0])
            else:
                found.append(_Candidate(path, key, opened[0], opened[1]))
        return found

    def _known_here(self, key: FileKey, path: str, fd: int, size: int) -> bool:
        """Whether the file at ``path`` is one we let go with a saved position (a copy we took bytes from, a
        generation read to its end): not if its inode number was given to another file since, as gzip's
        delete of the last copy and logrotate's next copy do between two of our looks."""
        saved = self._registry.saved(key)
        if saved is None:
            return False
        try:
            head = read_head(fd)
        except OSError:
            return True
        return self._discovery.saved_here(saved, path, fd, size, head, other_content="never")

    def _drop_copies(self, candidates: list[_Candidate], keep_empty: frozenset[str] = frozenset()) -> list[_Candidate]:
        """Keep the candidates that are files of their own: not empty, not a copy of one we follow.

        An empty file can be a copy not yet written; those in ``keep_empty`` cannot (see :func:`_own_names`)
        and are kept, since their last words may still come."""
        kept = []
        for candidate in candidates:
            try:
                size = candidate.st.st_size
                if size == 0:
                    copy = candidate.path not in keep_empty
                else:
                    copy = self._discovery.copy_of_followed(candidate.path, candidate.fd, size, read_head(candidate.fd))
            except OSError:
                copy = True
            if copy:
                os.close(candidate.fd)
            else:
                kept.append(candidate)
        return kept

    def _follow_in_order(self, found: list[_Candidate], pattern: str, newer: Tail | None, family: str,
                         event: str) -> None:
        """Track ``found`` (oldest first), each before the first file of ``family`` written after it; ``newer``
        is the file that holds the name as far as we know (see :meth:`Registry.written_after`)."""
        holder_age = self._moved_holder_age(newer, found)
        base = os.path.basename(newer.real) if newer is not None else ""
        for candidate in found:
            try:
                head = read_head(candidate.fd)
            except OSError:
                os.close(candidate.fd)
                continue
            after = holder_age is not None and self._age(candidate.path, candidate.st, base) > holder_age
            before = self._registry.written_after(family, candidate.st.st_mtime_ns, None if after else newer)
            gen = self._discovery.track(candidate.path, pattern, candidate.key, candidate.fd, 0,
                                        Fingerprint.of(head), "rename", before=before, family=family)
            log.info(event, path=candidate.path, inode=gen.key.ino)

    def _moved_holder_age(self, holder: Tail | None, found: list[_Candidate]) -> _Age | None:
        """Where ``holder`` sorts among ``found`` (:meth:`_age`) when it was renamed on beside its name since
        we opened it and one of them was last written in the same tick of the file clock: the modification
        time alone would put that one first, though it may have taken the name after the holder (a burst
        of renames a millisecond apart). None when the times decide, or the holder is not beside its name."""
        if holder is None or holds_name(holder):
            return None
        try:
            written = os.fstat(holder.fd).st_mtime_ns
        except OSError:
            return None
        if not any(c.st.st_mtime_ns == written for c in found):
            return None
        base = os.path.basename(holder.real)
        for sibling in self._siblings.of(holder.real):
            if FileKey.of(sibling.st) == holder.key:
                return self._age(sibling.path, sibling.st, base)
        return None

    # -- start-up ------------------------------------------------------------------------------------

    def resume_saved(self) -> None:
        """Finish what moved away while we were down: each saved file not reopened by its name, wherever its
        inode is now (at its saved path, or beside it), and any generation born since our last look. A saved
        file whose number the scan found on another file (or on ours, emptied) may have left a copy."""
        for entry in self._registry.saved_entries():
            key = FileKey(entry.dev, entry.ino)
            if self._registry.open_tail(key) is not None:
                continue
            seen = entry.seen  # a file found at its end is kept as seen now: the search reaches back to our last look
            found = self._locate(entry, key)
            if found is None:
                self._resume_from_copy(entry)
            elif not self._resume(entry, *found):
                continue  # disowned: its copy is looked for below, with the others start-up disowned
            self._find_born_since(entry, seen)
        for entry in self._registry.end_startup():
            self._resume_from_copy(entry)
            self._find_born_since(entry, entry.seen)

    def _find_born_since(self, entry: Entry, seen: float) -> None:
        """The files born since our last look (``seen``) that a saved file's lines went on in: its generations
        and, when a symlink named it and names another file now, the link's targets in between."""
        link = self._link_of(entry)
        holder = self._registry.holder_for(entry.path) or link
        family = holder.family if holder is not None else entry.path
        self.find_generations(entry.path, entry.pattern, seen, family)
        if link is not None and link.real != entry.path:
            self._follow_targets_between(entry.path, seen, entry.pattern, link.real, holder, family)

    def _holder_of(self, entry: Entry) -> Tail | None:
        """What a saved file's generations and copies found at start-up go before: the file that holds its
        name, or the one the symlink that named it names now."""
        return self._registry.holder_for(entry.path) or self._link_of(entry)

    def _link_of(self, entry: Entry) -> Tail | None:
        """The followed symlink's file that a saved file was followed through (its own name matches no glob):
        the one of its glob whose target is in its directory, if there is just one."""
        if self._discovery.paths.match(entry.path) is not None:
            return None
        beside = self._registry.holding_names().get(os.path.dirname(entry.path), ())
        links = [t for t in beside if t.pattern == entry.pattern and t.path != t.real]
        return links[0] if len(links) == 1 else None

    def _resume(self, entry: Entry, path: str, fd: int, size: int) -> bool:
        """Reopen a saved file found away from its name, if it holds more than we had read of it; False when
        its number now belongs to another file (or to ours emptied by copytruncate: an empty file cannot
        tell), whose copy beside it may then hold what we knew."""
        try:
            head = read_head(fd)
        except OSError:
            os.close(fd)
            return True
        if not self._discovery.saved_here(entry, path, fd, size, head, other_content="anywhere"):
            os.close(fd)
            return False
        tail = self._discovery.resume(entry, path, fd, size, head, keep_at_end=False, rotated="rename",
                                      before=self._holder_of(entry))
        if tail is not None:
            log.info("resuming_rotated", path=path, offset=entry.offset)
        return True

    def _resume_from_copy(self, entry: Entry) -> None:
        """A saved file gone while we were down after logrotate copied it (copytruncate, then the file
        deleted, or renamed on empty where its number cannot tell it from a new file's): the newest sibling
        written since our last look that holds every byte we knew of it, up to our position, holds what we
        had not read, and is read on from there as the file (a glob matching it skipped it as that file's
        copy)."""
        if not entry.fp_len:
            return
        copy, head = None, b""
        for candidate in reversed(self._new_siblings(entry.path, entry.seen - COPY_SLACK + MTIME_SLACK, entry.pattern)):
            if copy is None and candidate.st.st_size >= entry.offset:
                with contextlib.suppress(OSError):
                    head = read_head(candidate.fd)
                    if holds_saved(entry, candidate.fd, candidate.st.st_size, head):
                        copy = candidate
                        continue
            os.close(candidate.fd)
        if copy is None:
            return
        self._registry.take_saved(FileKey(entry.dev, entry.ino))
        moved = dataclasses.replace(entry, dev=copy.key.dev, ino=copy.key.ino)
        tail = self._discovery.resume(moved, copy.path, copy.fd, copy.st.st_size, head, keep_at_end=False,
                                      rotated="copytruncate", before=self._holder_of(entry))
        if tail is None:  # the copy holds nothing we had not read: it is known, at its end, not a generation
            self._registry.remember(dataclasses.replace(moved, path=os.path.realpath(copy.path)))
        else:
            log.info("copytruncate_recovery", path=entry.path, copy=copy.path,
                     missing_bytes=copy.st.st_size - entry.offset)

    def _locate(self, entry: Entry, key: FileKey) -> tuple[str, int, int] | None:
        paths = [entry.path, *(s.path for s in self._siblings.of(entry.path) if FileKey.of(s.st) == key)]
        for path in paths:
            opened = self._discovery.open_verified(path, entry.pattern, key)
            if opened is not None:
                return path, opened[0], opened[1].st_size
        return None
