"""Finding files by name and starting to follow the new ones: from a scan of the globs, or one reported name.

Every open is verified against the identity the name had when we looked (rotation may have moved another
file there in between). A file we knew resumes at its saved position; a new one starts at its head (or,
on the very first start with ``--read-from tail``, after its last complete line). A new name that is only
a copy of a file we follow (copytruncate's copy, a ``cp``) is never followed on its own: its bytes are
the original's.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Callable
from typing import Literal

from sidecar.core.checkpoint import Entry
from sidecar.core.config import FollowConfig
from sidecar.core.events import RotationKind
from sidecar.core.identity import FileKey, Fingerprint, mark_matches, open_for_reading, read_head
from sidecar.core.paths import Found, PathsProvider
from sidecar.core.problems import Problems
from sidecar.core.registry import Registry
from sidecar.core.tail import Tail
from sidecar.log import get_logger

log = get_logger("sidecar.core")

COMPARE_BYTES = 4096
"""How much of two files' start and end is compared to call one a copy of the other."""

Replaced = Callable[[Tail, bytes], None]


def same_bytes(fd_a: int, fd_b: int, start: int, length: int) -> bool:
    return length <= 0 or os.pread(fd_a, length, start) == os.pread(fd_b, length, start)


def is_prefix(fd: int, size: int, of_fd: int) -> bool:
    """Whether the ``size`` bytes on ``fd`` are the start of what ``of_fd`` holds (sampled at both ends)."""
    try:
        if os.fstat(of_fd).st_size < size:
            return False
        head = min(size, COMPARE_BYTES)
        tail_start = max(head, size - COMPARE_BYTES)
        return same_bytes(fd, of_fd, 0, head) and same_bytes(fd, of_fd, tail_start, size - tail_start)
    except OSError:
        return False


def resumable(fd: int, entry: Entry) -> bool:
    """Whether the file on ``fd`` still holds, just before the saved offset, the bytes it held when saved."""
    try:
        return mark_matches(fd, entry.offset, entry.mark, entry.mark_len)
    except OSError:
        return False


def holds_saved(entry: Entry, fd: int, size: int, head: bytes) -> bool:
    """Whether the file on ``fd`` (``size`` bytes, beginning with ``head``) holds every byte we knew of the saved
    file up to its position: the head we fingerprinted and the marker before the offset. Such a file found
    under another number is that file's copy, to be read on from there; a file saved empty tells nothing."""
    return (bool(entry.fp_len) and size >= entry.offset and Fingerprint(entry.fingerprint, entry.fp_len).matches(head)
            and resumable(fd, entry))


def _replaced(tail: Tail) -> bool:
    """Whether the file ``tail`` reads no longer holds what we read of it: its head changed, or it shrank."""
    return not tail.fp.matches(read_head(tail.fd)) or os.fstat(tail.fd).st_size < tail.pos


def holds_name(tail: Tail) -> bool:
    """Whether ``tail``'s name still names its file: once it moved, a new sibling is a successor, not a copy."""
    try:
        return FileKey.of(os.stat(tail.path)) == tail.key
    except OSError:
        return False


def shows_truncation(tail: Tail, fd: int, size: int) -> bool:
    """Whether a sibling (``size`` bytes on ``fd``) holds every byte we know of ``tail`` yet is no prefix of it
    now: the file was truncated without our seeing it, and the sibling is its copy."""
    return tail.holds_known_bytes(fd, size) and not is_prefix(fd, size, tail.fd)


def tail_offset(fd: int, size: int) -> int:
    """Just past the last complete line: where ``--read-from tail`` starts."""
    start = max(0, size - 65536)
    data = os.pread(fd, size - start, start)
    return start + data.rfind(b"\n") + 1 if b"\n" in data else size


class Discovery:
    """Opens the files the globs name; see the module docstring."""

    def __init__(self, config: FollowConfig, paths: PathsProvider, registry: Registry, problems: Problems,
                 on_advance: Callable[[int], None], on_replaced: Replaced) -> None:
        self._config = config
        self.paths = paths
        self._registry = registry
        self.problems = problems
        self._on_advance = on_advance
        self._on_replaced = on_replaced
        self.last_scan: float | None = None

    # -- opening ------------------------------------------------------------------------------------

    def open_verified(self, path: str, pattern: str, key: FileKey | None) -> tuple[int, os.stat_result] | None:
        """Open ``path`` if it is still the file ``key`` names (any regular file when ``key`` is None)."""
        try:
            fd = open_for_reading(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.cannot_open(path, pattern, exc)
            return None
        self.problems.recovered(path)
        st = os.fstat(fd)
        if (key is not None and FileKey.of(st) != key) or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st

    def track(self, path: str, pattern: str, key: FileKey, fd: int, offset: int, fp: Fingerprint,
              rotated: RotationKind | None = None, before: Tail | None = None, family: str | None = None,
              opened_at: float | None = None) -> Tail:
        tail = Tail(key, fd, path, pattern, offset, fp, self._on_advance, rotated,
                    family or (before.family if before is not None else None), opened_at)
        self._registry.add(tail, before)
        return tail

    # -- scanning -----------------------------------------------------------------------------------

    def scan(self, first_start: bool = False, startup: bool = False, known_at: dict[str, FileKey] | None = None
             ) -> list[Tail]:
        """Follow every new file the globs match now; known files first, so their copies are recognised.

        ``known_at`` maps paths to the identity a name check just found there, sparing a second ``stat``.
        """
        scan_started = time.time()
        found: list[tuple[Found, os.stat_result | None, FileKey]] = []
        for item in self.paths.scan():
            key = known_at.get(item.path) if known_at else None
            if key is not None and self._registry.open_tail(key) is not None:
                continue
            try:
                st = os.stat(item.path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                if not stat.S_ISDIR(st.st_mode):
                    self.problems.not_regular(item.path, item.pattern)
                continue
            found.append((item, st, FileKey.of(st)))
        found.sort(key=lambda f: not self._registry.knows(f[2]))
        new = [t for item, st, _ in found if st is not None and (t := self.consider(item, st, first_start, startup))]
        self.last_scan = scan_started
        return new

    def consider_path(self, path: str) -> Tail | None:
        """A name the watcher just reported: follow it now if a glob matches it (before it can vanish)."""
        pattern = self.paths.match(path)
        if pattern is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return self.consider(Found(path, pattern), st, first_start=False, startup=False)

    def consider_target(self, path: str) -> Tail | None:
        """A name the watcher just reported that a followed symlink resolved to: follow it now, under the
        link, if the link still resolves to it. A link target's name matches no glob, so without this a
        target created by a rotation and left by a swap of the link before our next look would be missed."""
        for link in self._registry.links_to(path):
            if os.path.realpath(link) == path:
                return self.consider_path(link)
        return None

    def consider(self, item: Found, st: os.stat_result, first_start: bool, startup: bool) -> Tail | None:
        """Start following ``item`` (``st``: its ``stat`` just before) unless it is followed already, too old,
        or a copy of a followed file.

        What we know of a new file is what it held when we opened it: its fingerprint covers only the bytes
        it had at that ``stat`` and still had after the open (none, if it shrank meanwhile), and copies made
        since count as ours. The process may be stopped (SIGSTOP, CPU throttling) anywhere in between while
        the file is copytruncated: a fingerprint of bytes written after, or a start time taken after, would
        make those copies look like strangers, or older than our first look.
        """
        key = FileKey.of(st)
        if self._registry.open_tail(key) is not None:
            return None
        entry = self._registry.saved(key)
        ignore_older = self._config.ignore_older
        if entry is None and ignore_older is not None and time.time() - st.st_mtime > ignore_older:
            return None
        opened_at, seen_size = time.time(), st.st_size
        opened = self.open_verified(item.path, item.pattern, key)
        if opened is None:
            return None
        fd, st = opened
        try:
            head = read_head(fd)[: min(seen_size, st.st_size)]
            if min(st.st_size, os.fstat(fd).st_size) < seen_size:
                head = b""
        except OSError as exc:
            os.close(fd)
            self.problems.cannot_read(item.path, item.pattern, exc)
            return None
        if entry is not None and not self.saved_here(entry, item.path, fd, st.st_size, head):
            entry = None
        before = None
        if entry is None:
            entry = self._copy_of_disowned(key, fd, st.st_size, head)
            before = self._registry.first_beside(entry.path, st.st_mtime_ns) if entry is not None else None
        if entry is not None:
            return self.resume(entry, item.path, fd, st.st_size, head, keep_at_end=startup, before=before)
        if self.copy_of_followed(item.path, fd, st.st_size, head):
            log.debug("copy_skipped", path=item.path, inode=key.ino)
            os.close(fd)
            return None
        real = os.path.realpath(item.path)
        holder = self._replaced_holder(real, fd, st.st_size)
        if holder is not None:
            if self._registry.open_tail(key) is not None:  # taken as one of its copies
                os.close(fd)
                return None
            copy = self.track(item.path, item.pattern, key, fd, 0, Fingerprint.of(head), "copytruncate",
                              before=self._older_than(holder, st.st_mtime_ns), family=holder.family)
            log.info("copytruncate_generation_found", path=holder.path, copy=item.path, inode=copy.key.ino)
            return None
        offset = tail_offset(fd, st.st_size) if first_start and self._config.read_from == "tail" else 0
        unread = self._unread_holder(real, st.st_mtime_ns) if offset == 0 else None
        if unread is not None:
            self.track(item.path, item.pattern, key, fd, 0, Fingerprint.of(head), "rename",
                       before=self._older_than(unread, st.st_mtime_ns), family=unread.family, opened_at=opened_at)
            log.info("generation_found", path=item.path, inode=key.ino)
            return None
        return self.track(item.path, item.pattern, key, fd, offset, Fingerprint.of(head), opened_at=opened_at)

    def _older_than(self, holder: Tail, mtime_ns: int) -> Tail:
        """What a copy or generation of ``holder``'s family last written at ``mtime_ns`` goes just before: the
        first of the family's files written after it, which may be a file renamed away from the name while we
        were down (resumed as a generation), or else ``holder``."""
        return self._registry.written_after(holder.family, mtime_ns, holder) or holder

    def _unread_holder(self, real: str, mtime_ns: int) -> Tail | None:
        """A followed file whose name ``real`` extends, not read yet and last written no earlier than the file
        at ``real``: found in the same look (we started, or the file appeared, between two rotations), that
        file is its older generation or copy, and is read first, as a generation search orders them."""
        for named in self._registry.extended_by(real):
            for tail in named:
                try:
                    if (tail.rotated is None and tail.fd >= 0 and tail.pos == 0
                            and os.fstat(tail.fd).st_mtime_ns >= mtime_ns):
                        return tail
                except OSError:
                    continue
        return None

    def saved_here(self, entry: Entry, path: str, fd: int, size: int, head: bytes,
                   other_content: Literal["at_its_name", "anywhere", "never"] = "at_its_name") -> bool:
        """Whether the saved ``entry``, found by the inode of the file at ``path`` (``size`` bytes on ``fd``,
        beginning with ``head``), is that file; if not, the entry is forgotten.

        An inode number is given to a new file soon after its file is gone (ext4 hands out the lowest free
        one; gzip deletes the last copy just before logrotate's next copy takes one), so the number alone
        says little. Other content than we knew can be the file rewritten in place (copytruncate while we
        were down), read from 0 after the copies of what we knew: so it counts at the entry's own name
        (a glob's name) unless that name extends another file's we know (a copy or generation beside it,
        ``app.log.1``, whose number logrotate's next copy took: that copy is the other file's), or
        ``anywhere`` for the saved file looked for beside its name (copytruncated, then renamed), never for
        a file we let go looked at as a possible copy; and never for a copy of a followed file, which is
        what took the number. A file saved while empty has a fingerprint of nothing, which every content
        begins with: it tells no more than the number, and a copy of a followed file is not it either.
        """
        if (Fingerprint(entry.fingerprint, entry.fp_len).matches(head) and (entry.fp_len or not size)) or (
                (not entry.fp_len or other_content == "anywhere"
                 or (other_content == "at_its_name" and os.path.realpath(path) == entry.path
                     and not self._beside_known(entry.path)))
                and not self.copy_of_followed(path, fd, size, head)):
            return True
        self._registry.disown(FileKey(entry.dev, entry.ino))
        log.info("inode_reused", path=path, inode=entry.ino, saved_path=entry.path)
        return False

    def _copy_of_disowned(self, key: FileKey, fd: int, size: int, head: bytes) -> Entry | None:
        """The saved position of a file whose number the scan found on another file (or on ours, emptied by
        copytruncate), when this file holds every byte we knew of it up to that position: its copy, read on
        from there (known files are looked at first, so the number was disowned before its copy is met)."""
        for entry in self._registry.disowned():
            if holds_saved(entry, fd, size, head):
                self._registry.claim_disowned(entry)
                return dataclasses.replace(entry, dev=key.dev, ino=key.ino)
        return None

    def _beside_known(self, real: str) -> bool:
        """Whether ``real``'s name extends the name of a file we follow or have a saved position for."""
        return next(self._registry.extended_by(real), None) is not None or bool(self._registry.saved_extended_by(real))

    def resume(self, entry: Entry, path: str, fd: int, size: int, head: bytes, keep_at_end: bool,
               rotated: RotationKind | None = None, before: Tail | None = None) -> Tail | None:
        """Follow a file we have a saved position for again, from that position.

        Content replaced meanwhile (the head or the offset marker changed, or the file shrank) is handled as
        a truncation. A file holding nothing past the position is closed again unless ``keep_at_end``. One
        saved while empty and found under another name is a generation of the name it was saved under: we
        know nothing of its content by which its copies could be told, only that name's family's order.
        """
        key = FileKey(entry.dev, entry.ino)
        fp = Fingerprint(entry.fingerprint, entry.fp_len)
        same = fp.matches(head) and (size < entry.offset or resumable(fd, entry))
        if same and not keep_at_end and size <= entry.offset:
            os.close(fd)
            entry.seen = time.time()
            return None
        self._registry.take_saved(key)
        unknown_elsewhere = not entry.fp_len and os.path.realpath(path) != entry.path
        tail = self.track(path, entry.pattern, key, fd, entry.offset, fp,
                          rotated or ("rename" if unknown_elsewhere else None), before,
                          family=entry.path if unknown_elsewhere and before is None else None)
        tail.named = entry.path
        tail.resumed(entry.seen)
        if not same or size < entry.offset:
            self._on_replaced(tail, head)
        return tail

    def copy_of_followed(self, path: str, fd: int, size: int, head: bytes) -> bool:
        """Is this new file beside a followed one a copy of it (copytruncate, or ``cp``), maybe still being written?

        A copy is a prefix of what the original holds now; or, once the original was truncated, a file
        that begins with every byte we had read of it. A real generation that merely starts with the same
        banner or header is neither, and is followed.
        """
        real = os.path.realpath(path)
        for named in self._registry.extended_by(real):
            for tail in named:
                if tail.fd < 0:
                    continue
                if is_prefix(fd, size, tail.fd):
                    return True
                try:
                    if _replaced(tail) and tail.holds_known_bytes(fd, size):
                        return True
                except OSError:
                    continue
        for entry in self._registry.saved_extended_by(real):
            if entry.fp_len and Fingerprint(entry.fingerprint, entry.fp_len).matches(head):
                return True
        return False

    def _replaced_holder(self, real: str, fd: int, size: int) -> Tail | None:
        """A followed file whose name ``real`` (``size`` bytes on ``fd``) extends and whose content was replaced
        without our noticing yet: told now, so that it takes its copies, this one perhaps among them.

        Several copytruncates between two looks leave the oldest copy with what we were reading and newer
        ones with content born since, and a truncate before a copytruncate leaves a copy of content born
        after it; a glob that matches the copies finds them before the reader finds the file replaced. The
        file was replaced if it shrank or its head changed, or if this sibling holds every byte we know of
        it (all of them, when we knew none) and is no prefix of it now. The copies are read oldest first,
        before the file's new content, as the truncation's own handling reads them.
        """
        for named in self._registry.extended_by(real):
            for tail in named:
                try:
                    if tail.fd < 0 or tail.rotated is not None:
                        continue
                    if not (_replaced(tail) or (shows_truncation(tail, fd, size) and holds_name(tail))):
                        continue
                    head = read_head(tail.fd)
                except OSError:
                    continue
                self._on_replaced(tail, head)
                return tail
        return None
