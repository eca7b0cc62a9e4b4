"""The file server: finds files, follows each by identity through every rotation, hands lines to the sink.

One asyncio task owns every open file. Each round reads at most one chunk per file (so one busy or
slow file cannot starve the others), frames it into complete lines and awaits the sink, which is
where backpressure stops reading ahead. Positions only move in a file's :class:`Ledger` when the sink
commits a batch, and only committed positions reach the state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.core.checkpoint import CheckpointStore, Entry
from sidecar.core.config import FollowConfig
from sidecar.core.events import Observer, RotationKind
from sidecar.core.identity import FileKey, Fingerprint, read_head, read_head_of
from sidecar.core.ledger import Ledger
from sidecar.core.lines import Piece, frame
from sidecar.core.paths import Found, PathsProvider
from sidecar.core.siblings import siblings
from sidecar.core.sink import Batch, FileRef, Sink, Source
from sidecar.core.watch import Changes, Watcher, make_watcher
from sidecar.errors import CheckpointError
from sidecar.log import get_logger

log = get_logger(__name__)

MTIME_SLACK = 0.05
"""File times come from the kernel's coarse clock, which may lag ``time.time()`` by a tick."""
QUIET_AFTER_STOP = 1.0
"""With --drain-timeout, how long files must stay quiet after SIGTERM before we exit early."""
COALESCE = 0.005
"""Under a stream of small writes, wake at most this often: a write per wake-up would cost a core."""
CHECKPOINT_REFRESH = 30.0
"""Rewrite an unchanged state file this often (well inside the checkpoint-stale alert's 120 s)."""
DRAIN_GRACE = 5.0
"""After SIGTERM, how long reading a backlog, and then waiting for the sink, may take beyond --drain-timeout."""


@dataclass(eq=False, slots=True)
class Tail:
    """An open file: where we read, what the sink confirmed, and whether its name still points at it."""

    key: FileKey
    fp: Fingerprint
    path: str
    real: str
    pattern: str
    fd: int
    pos: int
    ledger: Ledger
    pending: bytes = b""
    rotated: RotationKind | None = None
    rotated_at: float = field(default_factory=time.monotonic)
    at_eof: bool = False
    last_growth: float = field(default_factory=time.monotonic)
    seen_at_path: float = field(default_factory=time.time)
    behind_since: float | None = None
    size: int = 0
    generation: int = 0

    @property
    def source(self) -> Source:
        return Source(self.path, self.pattern, FileRef(self.key.dev, self.key.ino, self.generation))

    def entry(self, now: float) -> Entry:
        return Entry(self.key.dev, self.key.ino, self.fp.digest, self.fp.length, self.ledger.committed,
                     self.real, self.pattern, now)


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "error").lower()


class Follower:
    """Follows every file the globs match and feeds complete lines to ``sink``."""

    def __init__(self, config: FollowConfig, sink: Sink, observer: Observer) -> None:
        self.config = config
        self.sink = sink
        self.observer = observer
        self.store = CheckpointStore(config.checkpoint_dir)
        self.paths = PathsProvider(config.paths, config.exclude)
        self.watcher: Watcher = make_watcher(config.watch)
        self.tails: list[Tail] = []
        self.by_key: dict[FileKey, Tail] = {}
        self.closed: dict[FileKey, Entry] = {}
        self.scanned = False
        self._read_size = min(config.read_chunk_bytes, config.max_line_bytes)
        self._buf = bytearray(config.max_line_bytes + self._read_size)
        self._view = memoryview(self._buf)
        self._complained: set[str] = set()
        self._checkpoint_failing = False
        self._saved_state: list[tuple[int, int, str, int, str]] = []
        self._saved_at = 0.0
        self._last_scan: float | None = None
        self._poll_due = False

    # -- start-up -------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the state file and open every matching file at its saved (or initial) position."""
        self.store.prepare()
        first_start = not self.store.exists()
        try:
            entries = self.store.load()
        except CheckpointError as exc:
            aside = self.store.quarantine()
            log.error("checkpoint_unreadable", error=str(exc), moved_to=str(aside))
            self.observer.read_error("checkpoint", "corrupt")
            entries = []
        for entry in entries:
            self.closed[FileKey(entry.dev, entry.ino)] = entry
        self._discover(first_start=first_start, startup=True)
        self._resume_rotated_while_down()
        self.scanned = True

    def _resume_rotated_while_down(self) -> None:
        """Finish what was renamed away while we were down: the known file, found beside its old name by
        inode, and any generation born after our last look (newer than the state file's ``seen``)."""
        for key, entry in list(self.closed.items()):
            try:
                still_there = FileKey.of(os.stat(entry.path)) == key
            except OSError:
                still_there = False
            if still_there:
                continue
            for sib in siblings(entry.path):
                if FileKey.of(sib.st) == key and sib.st.st_size > entry.offset:
                    tail = self._open(Found(sib.path, entry.pattern), key, entry.offset, rotated="rename",
                                      fp=Fingerprint(entry.fingerprint, entry.fp_len))
                    if tail is not None:
                        del self.closed[key]
                        log.info("resuming_rotated", path=sib.path, offset=entry.offset)
                    break
            self._find_generations(entry.path, entry.pattern, entry.seen)

    # -- discovery ------------------------------------------------------------------------------

    def _discover(self, first_start: bool = False, startup: bool = False) -> None:
        scan_started = time.time()
        found: list[tuple[Found, os.stat_result]] = []
        for item in self.paths.scan():
            try:
                st = os.stat(item.path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    continue
                self._complain_once(item.path, "not_regular", "matched path is not a regular file; exclude it")
                self.observer.read_error(item.pattern, "not_regular")
                continue
            found.append((item, st))
        known = {i for i, (_, st) in enumerate(found) if FileKey.of(st) in self.closed or FileKey.of(st) in self.by_key}
        order = sorted(range(len(found)), key=lambda i: i not in known)
        for i in order:
            self._consider(found[i][0], found[i][1], first_start, startup)
        self._last_scan = scan_started
        self.watcher.watch(self.paths.watch_dirs() | {os.path.dirname(t.real) for t in self.tails})

    def _consider(self, item: Found, st: os.stat_result, first_start: bool, startup: bool) -> None:
        key = FileKey.of(st)
        if key in self.by_key:
            return
        entry = self.closed.get(key)
        ignore_older = self.config.ignore_older
        if entry is None and ignore_older is not None and time.time() - st.st_mtime > ignore_older:
            return
        fd = self._open_fd(item, key)
        if fd < 0:
            return
        try:
            head = read_head(fd)
        except OSError as exc:
            os.close(fd)
            self._read_error(item.pattern, item.path, exc)
            return
        if entry is not None:
            fp = Fingerprint(entry.fingerprint, entry.fp_len)
            same = fp.matches(head)
            if same and not startup and st.st_size <= entry.offset:
                os.close(fd)
                entry.seen = time.time()
                return
            del self.closed[key]
            tail = self._track(item, key, fd, entry.offset, fp)
            if not same or st.st_size < entry.offset:
                self._truncated(tail, head)
            return
        if self._copy_of_open_file(item.path, head):
            log.debug("copy_skipped", path=item.path, inode=key.ino)
            os.close(fd)
            return
        offset = self._tail_offset(fd, st.st_size) if first_start and self.config.read_from == "tail" else 0
        tail = self._track(item, key, fd, offset, Fingerprint.of(head))
        if not startup and self._last_scan is not None:
            self._find_generations(tail.real, tail.pattern, self._last_scan)

    def _copy_of_open_file(self, path: str, head: bytes) -> bool:
        """Is this new file beside a followed one a copy of it (copytruncate, or ``cp``), maybe still being written?

        A copy is never followed on its own — the original has its bytes. It is only read from, by
        :meth:`_truncated`, for the range the original lost, and then remembered as consumed.
        """
        directory, name = os.path.split(os.path.realpath(path))
        for tail in self.tails:
            tdir, tname = os.path.split(tail.real)
            if tdir != directory or name == tname or not name.startswith(tname) or not tail.fp.length:
                continue
            if tail.fp.matches(head):
                return True
            if len(head) < tail.fp.length and os.pread(tail.fd, len(head), 0) == head:
                return True
        for entry in self.closed.values():
            edir, ename = os.path.split(entry.path)
            if (edir == directory and name != ename and name.startswith(ename) and entry.fp_len
                    and Fingerprint(entry.fingerprint, entry.fp_len).matches(head)):
                return True
        return False

    @staticmethod
    def _tail_offset(fd: int, size: int) -> int:
        """Just past the last complete line: where ``--read-from tail`` starts."""
        start = max(0, size - 65536)
        data = os.pread(fd, size - start, start)
        return start + data.rfind(b"\n") + 1 if b"\n" in data else size

    def _open_fd(self, item: Found, key: FileKey) -> int:
        """Open ``item`` if it still is the file ``key`` names (rotation may have moved another file there)."""
        try:
            fd = os.open(item.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            self._complain_once(item.path, _reason(exc), f"cannot open: {exc.strerror}; fix its permissions")
            self.observer.read_error(item.pattern, _reason(exc))
            return -1
        self._complained.discard(item.path)
        if FileKey.of(os.fstat(fd)) != key:
            os.close(fd)
            return -1
        return fd

    def _open(self, item: Found, key: FileKey, offset: int, rotated: RotationKind | None,
              fp: Fingerprint) -> Tail | None:
        fd = self._open_fd(item, key)
        if fd < 0:
            return None
        tail = self._track(item, key, fd, offset, fp)
        tail.rotated = rotated
        return tail

    def _track(self, item: Found, key: FileKey, fd: int, offset: int, fp: Fingerprint,
               before: Tail | None = None) -> Tail:
        tail = Tail(key, fp, item.path, os.path.realpath(item.path), item.pattern, fd, offset, Ledger(offset))
        if before is None:
            self.tails.append(tail)
        else:
            self.tails.insert(self.tails.index(before), tail)
        self.by_key[key] = tail
        self.observer.file_opened(item.pattern)
        log.info("file_opened", path=item.path, inode=key.ino, offset=offset)
        return tail

    # -- rotation -------------------------------------------------------------------------------

    def _truncated(self, tail: Tail, head: bytes) -> None:
        """The file shrank or was rewritten: finish the old content from its copy if one exists, restart at 0."""
        resume = tail.pos - len(tail.pending)
        kind: RotationKind = "truncate"
        for sib in siblings(tail.real):
            sib_key = FileKey.of(sib.st)
            if sib_key == tail.key or sib_key in self.by_key:
                continue
            copy_head = read_head_of(sib.path)
            if copy_head is None or not tail.fp.length or not tail.fp.matches(copy_head):
                continue
            kind = "copytruncate"
            self.closed[sib_key] = Entry(sib_key.dev, sib_key.ino, tail.fp.digest, tail.fp.length,
                                         min(resume, sib.st.st_size), sib.path, tail.pattern, time.time())
            if sib.st.st_size > resume:
                found = Found(sib.path, tail.pattern)
                fd = self._open_fd(found, sib_key)
                if fd >= 0:
                    del self.closed[sib_key]
                    copy_tail = self._track(found, sib_key, fd, resume, tail.fp, before=tail)
                    copy_tail.ledger = tail.ledger
                    copy_tail.rotated = "copytruncate"
                    log.info("copytruncate_recovery", path=tail.path, copy=sib.path,
                             missing_bytes=sib.st.st_size - resume)
            break
        if kind == "truncate" and resume > 0:
            log.warning("file_truncated", path=tail.path, unread_from=resume)
        else:
            log.info("file_rotated", path=tail.path, kind=kind, inode=tail.key.ino)
        self.observer.rotated(tail.pattern, kind)
        tail.pos = 0
        tail.generation += 1
        tail.pending = b""
        tail.fp = Fingerprint.of(head)
        tail.ledger = Ledger(0)
        tail.at_eof = False

    def _check_name(self, tail: Tail) -> None:
        """Has the tail's name been taken from it (rename, delete, symlink swap)?"""
        if tail.rotated is not None:
            return
        now = time.time()
        try:
            st = os.stat(tail.path)
            if FileKey.of(st) == tail.key:
                tail.seen_at_path = now
                tail.size = st.st_size
                return
        except OSError:
            pass
        try:
            deleted = os.fstat(tail.fd).st_nlink == 0
        except OSError:
            deleted = True
        kind: RotationKind = "delete" if deleted else "symlink" if os.path.islink(tail.path) else "rename"
        tail.rotated = kind
        tail.rotated_at = time.monotonic()
        tail.at_eof = False
        self.observer.rotated(tail.pattern, kind)
        log.info("file_rotated", path=tail.path, kind=kind, inode=tail.key.ino)
        if kind == "rename":
            self._find_generations(tail.real, tail.pattern, tail.seen_at_path)

    def _find_generations(self, real: str, pattern: str, since: float) -> None:
        """Generations created and renamed away between two of our looks: beside the file, written since then.

        They are read from their first byte, oldest first, just before the file that now holds the name
        (they are older than it and newer than everything we followed under that name before).
        """
        found: list[tuple[Found, os.stat_result]] = []
        for sib in siblings(real):
            key = FileKey.of(sib.st)
            if key in self.by_key or key in self.closed or sib.st.st_mtime < since - MTIME_SLACK:
                continue
            head = read_head_of(sib.path)
            if head is not None and not self._copy_of_open_file(sib.path, head):
                found.append((Found(sib.path, pattern), sib.st))
        newest = next((t for t in self.tails if t.real == real and t.rotated is None), None)
        for item, st in sorted(found, key=lambda f: f[1].st_mtime_ns):
            gen = self._open(item, FileKey.of(st), 0, "rename", Fingerprint.of(b""))
            if gen is None:
                continue
            if newest is not None and newest is not gen:
                self.tails.remove(gen)
                self.tails.insert(self.tails.index(newest), gen)
            log.info("generation_found", path=item.path, inode=gen.key.ino)

    # -- reading --------------------------------------------------------------------------------

    async def _read_once(self, tail: Tail) -> bool:
        """Read one chunk from ``tail`` and emit its complete lines; False when there was nothing new."""
        try:
            head = read_head(tail.fd)
            if not tail.fp.matches(head):
                self._truncated(tail, head)
            elif not tail.fp.complete and len(head) > tail.fp.length:
                tail.fp = Fingerprint.of(head)
            carried = len(tail.pending)
            self._buf[:carried] = tail.pending
            got = os.preadv(tail.fd, [self._view[carried: carried + self._read_size]], tail.pos)
            if got == 0:
                size = os.fstat(tail.fd).st_size
                if size < tail.pos:
                    self._truncated(tail, read_head(tail.fd))
                    return True
                tail.size = size
                tail.at_eof = True
                return False
        except OSError as exc:
            self._read_error(tail.pattern, tail.path, exc)
            return False
        base = tail.pos - carried
        tail.pos += got
        tail.size = max(tail.size, tail.pos)
        tail.at_eof = got < self._read_size
        tail.last_growth = time.monotonic()
        pieces, rest = frame(self._buf, self._view, carried + got, self.config.max_line_bytes)
        tail.pending = bytes(self._buf[rest: carried + got])
        for piece in pieces:
            await self._emit(tail, piece, base)
        return True

    async def _emit(self, tail: Tail, piece: Piece, base: int) -> None:
        if piece.start < 0:
            self.observer.long_line(tail.pattern)
        offset = base + piece.start if piece.start >= 0 else -1
        commit = tail.ledger.add(base + piece.end)
        self.observer.read(tail.pattern, piece.lines, len(piece.data))
        await self.sink.emit(Batch(tail.source, piece.data, piece.lines, tail.fd, offset, commit))

    async def _read_round(self, tails: Iterable[Tail]) -> bool:
        busy = False
        for tail in list(tails):
            if tail.fd >= 0 and await self._read_once(tail):
                busy = True
        return busy

    def _read_error(self, pattern: str, path: str, exc: OSError) -> None:
        self.observer.read_error(pattern, _reason(exc))
        self._complain_once(path, _reason(exc), f"read failed: {exc.strerror}")

    def _complain_once(self, path: str, reason: str, message: str) -> None:
        if path not in self._complained:
            self._complained.add(path)
            log.error("file_error", path=path, reason=reason, message=message)

    # -- letting go -----------------------------------------------------------------------------

    async def _close_finished(self) -> None:
        """Close rotated-away files that were read to the end and stayed quiet for ``--rotate-wait``."""
        now = time.monotonic()
        for tail in [t for t in self.tails if t.rotated is not None and t.at_eof]:
            if now - tail.last_growth < self.config.rotate_wait or await self._read_once(tail):
                continue
            if tail.pending:
                await self._emit_unfinished(tail)
            if tail.ledger.idle:
                self._close(tail)

    async def _emit_unfinished(self, tail: Tail) -> None:
        """A file we let go can never complete its last line: emit it with a newline of our own."""
        data, tail.pending = tail.pending + b"\n", b""
        piece = Piece(memoryview(data), 1, -1, len(data) - 1)
        await self._emit(tail, piece, tail.pos - piece.end)

    def _give_up_overdue(self) -> None:
        """A rotated file the sink could not take in ``--rotate-wait-max`` (receiver down for long) is given up,
        so that a deleted file's disk space is not held for ever; its unread bytes are counted."""
        now = time.monotonic()
        for tail in [t for t in self.tails if t.rotated is not None]:
            if now - tail.rotated_at >= self.config.rotate_wait_max:
                self._give_up(tail)

    def _give_up(self, tail: Tail) -> None:
        try:
            size = os.fstat(tail.fd).st_size
        except OSError:
            size = tail.size
        unread = max(size - tail.ledger.committed, 0)
        if unread:
            self.observer.given_up(tail.pattern, unread)
            log.warning("rotated_file_given_up", path=tail.path, unread_bytes=unread,
                        hint="the sink did not take it within --rotate-wait-max")
        self._close(tail, skip_to=size)

    def _close(self, tail: Tail, skip_to: int = 0) -> None:
        try:
            alive = os.fstat(tail.fd).st_nlink > 0
        except OSError:
            alive = False
        os.close(tail.fd)
        tail.fd = -1
        self.tails.remove(tail)
        del self.by_key[tail.key]
        if alive:
            entry = tail.entry(time.time())
            entry.offset = max(entry.offset, skip_to)
            self.closed[tail.key] = entry
        self.observer.file_closed(tail.pattern)
        log.info("file_closed", path=tail.path, inode=tail.key.ino, offset=tail.ledger.committed)

    # -- bookkeeping ----------------------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> None:
        """Write every known file's committed position; a failure is reported and retried next time.

        An unchanged state is rewritten only every :data:`CHECKPOINT_REFRESH`, so an idle sidecar does
        not fsync every second, yet ``seen`` times and the checkpoint-age metric stay fresh.
        """
        now = time.time()
        self._forget_stale(now)
        entries = [t.entry(now) for t in self.tails] + list(self.closed.values())
        state = [(e.dev, e.ino, e.fingerprint, e.offset, e.path) for e in entries]
        if not force and state == self._saved_state and now - self._saved_at < CHECKPOINT_REFRESH:
            return
        try:
            self.store.save(entries)
        except CheckpointError as exc:
            self.observer.checkpoint_written(False)
            if not self._checkpoint_failing:
                log.error("checkpoint_failed", error=str(exc))
            self._checkpoint_failing = True
            return
        if self._checkpoint_failing:
            log.info("checkpoint_recovered", path=str(self.store.path))
        self._checkpoint_failing = False
        self._saved_state, self._saved_at = state, now
        self.observer.checkpoint_written(True)

    def _forget_stale(self, now: float) -> None:
        for key, entry in list(self.closed.items()):
            try:
                present = FileKey.of(os.stat(entry.path)) == key
            except OSError:
                present = False
            if present:
                entry.seen = now
            elif now - entry.seen > self.config.forget_after:
                del self.closed[key]

    def _report(self) -> None:
        now = time.monotonic()
        behind = 0
        oldest = now
        for tail in self.tails:
            lag = max(tail.size - tail.ledger.committed, 0)
            behind += lag
            if lag == 0:
                tail.behind_since = None
            elif tail.behind_since is None:
                tail.behind_since = now
            oldest = min(oldest, tail.behind_since or now)
        self.observer.files_watched(len(self.tails))
        self.observer.backlog(behind, now - oldest)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set, drain what is readable, flush the sink and checkpoint.

        Reading and housekeeping are separate tasks: while the sink holds the reader back (receiver
        down), rotations are still noticed, new files are opened (so their data cannot vanish), the
        backlog is reported and checkpoints are written.
        """
        if not self.scanned:
            self.start()
        keeper = asyncio.create_task(self._keep_house())
        reader = asyncio.create_task(self._follow(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            self.watcher.wake()
            if not reader.done():
                await asyncio.wait({reader}, timeout=self.config.drain_timeout + DRAIN_GRACE)
            if not reader.done():
                log.warning("drain_timed_out", hint="the sink did not take the last lines; they stay in the checkpoint")
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            elif not reader.cancelled():
                reader.result()
            await self.sink.drain(timeout=DRAIN_GRACE)
        finally:
            keeper.cancel()
            stopped.cancel()
            self.checkpoint(force=True)
            for tail in self.tails:
                os.close(tail.fd)
            self.watcher.close()
            log.info("stopped", files=len(self.tails), checkpoint=str(self.store.path))

    def _rescan(self) -> None:
        for tail in list(self.tails):
            self._check_name(tail)
        self._discover()

    async def _keep_house(self) -> None:
        """Every poll interval: notice rotations and new files, report, give up overdue files; checkpoint."""
        poll, every = self.config.poll_interval, self.config.checkpoint_interval
        next_poll, next_checkpoint = time.monotonic() + poll, time.monotonic() + every
        while True:
            await asyncio.sleep(max(min(next_poll, next_checkpoint) - time.monotonic(), 0.0))
            now = time.monotonic()
            if now >= next_poll:
                self._rescan()
                self._give_up_overdue()
                self._report()
                self._poll_due = True
                next_poll = now + poll
            if now >= next_checkpoint:
                self.checkpoint()
                next_checkpoint = now + every

    async def _follow(self, stop: asyncio.Event) -> None:
        """The reader: one chunk per file per round, woken by the watcher, until ``stop``; then the drain."""
        changes = Changes(everything=True)
        hot: set[Tail] = set()
        last_wake = 0.0
        while not stop.is_set():
            if changes.structure:
                self._rescan()
            everything = changes.everything or self._poll_due
            self._poll_due = False
            wanted = self.tails if everything else [
                t for t in self.tails
                if t in hot or t.rotated is not None or t.real in changes.paths or t.path in changes.paths]
            await self._read_round(wanted)
            hot = {t for t in wanted if not t.at_eof}
            await self._close_finished()
            if hot:
                changes = Changes()
                await asyncio.sleep(0)
                continue
            changes = await self.watcher.wait(self.config.poll_interval)
            since = time.monotonic() - last_wake
            if since < COALESCE:
                await asyncio.sleep(COALESCE - since)
            last_wake = time.monotonic()
        await self._drain_files()

    async def _drain_files(self) -> None:
        """Read what is readable now (and, with --drain-timeout, what arrives until files are quiet).

        Partial lines are not emitted here: they stay in the checkpoint and come out whole after a restart.
        """
        start = time.monotonic()
        deadline = start + self.config.drain_timeout
        quiet_since = start
        while True:
            busy = await self._read_round(self.tails)
            now = time.monotonic()
            if busy:
                quiet_since = now
                continue
            if now >= deadline or now - quiet_since >= min(QUIET_AFTER_STOP, self.config.drain_timeout):
                return
            await self.watcher.wait(min(0.1, deadline - now))
