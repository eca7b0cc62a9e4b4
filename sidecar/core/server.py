"""The file server: the thin loop that ties the parts together and hands complete lines to the sink.

Three tasks run under one :class:`asyncio.TaskGroup`, so that a failure in any of them ends the process
with a clear error instead of leaving it half alive:

- the *reader* reads at most one chunk per file per round (one busy or slow file cannot starve the
  others), frames it and awaits the sink, which is where backpressure stops reading ahead;
- *housekeeping* rescans the globs and checks names (every poll interval, or every few with live events),
  gives up overdue files and reports, also while the sink holds the reader back;
- the *checkpointer* saves committed positions (:mod:`sidecar.core.checkpointer`).

Beside them, the watcher reports new names from the event loop as soon as the kernel does; they are
opened at once (:meth:`FileServer._on_names`), before any coalescing, so that a generation deleted a few
milliseconds after it was created is still read from its open descriptor. Writes that come while the
reader waits are served as the loop would serve them, in its sleep (:mod:`sidecar.core.loop`), when
nothing about them needs waiting (:meth:`FileServer._serve_now`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Literal

from sidecar.core.checkpoint import CheckpointStore
from sidecar.core.checkpointer import Checkpointer
from sidecar.core.config import FollowConfig
from sidecar.core.discovery import Discovery
from sidecar.core.events import Liveness, Observer
from sidecar.core.identity import FileKey
from sidecar.core.lines import Piece
from sidecar.core.paths import PathsProvider
from sidecar.core.problems import Problems
from sidecar.core.registry import Registry
from sidecar.core.rotation import Rotation
from sidecar.core.sink import Batch, Sink
from sidecar.core.tail import Chunk, ReadBuffer, Tail, Truncated
from sidecar.core.watch import Changes, NameEvent, make_watcher
from sidecar.errors import CheckpointError, SidecarError
from sidecar.log import get_logger

log = get_logger("sidecar.core")

Sweep = Literal["by_times", "by_size"]
"""How a sweep tells a file it need not read: its size and times unchanged, or its size where we stopped."""

QUIET_AFTER_STOP = 1.0
"""With --drain-timeout, how long files must stay quiet after SIGTERM before we exit early."""
READ_GRACE = 2.0
"""Without --drain-timeout, how long reading what is readable may take after SIGTERM."""
EXIT_GRACE = 4.5
"""After SIGTERM, everything (reading, the sink's drain, the last checkpoint) ends by --drain-timeout + this."""
SWEEP_EVERY = 5
"""With live events, every file's name and size are checked every this many poll intervals."""
BUSY_WAKE = 0.0005
"""A write this soon after the reader began to wait, when the round before also ended this soon after its own
predecessor (within twice this, the round between), means writes keep coming: batch them. One short gap alone
is an app's jitter (a line written late, the next on time): at 1k lines/s a third of the wakes had one, and a
pause for it cost a sleep that seldom caught another write (9.5 -> 9.0 % CPU at 1k lines/s)."""
YIELD_EVERY = 0.001
"""While files have more to read, the reader lets the loop run (name events, probes, the other tasks) at
least this often, not after every round: a round of one busy file is one 512 KiB chunk (~0.1 ms), and a
loop iteration per chunk cost 5 % of a catch-up's CPU (0.320 -> 0.303 CPU-s per GB behind a Python reader)."""
BATCH_PAUSE = 0.0003
"""Under sustained writes, pause this long before looking for more, so that one read takes several writes
and the writes that came meanwhile cost no wake-up of their own. A plain sleep, not the loop's: its timers
have a resolution of 1 ms, which would put the p99 delay above 1 ms."""


class TaskFailed(SidecarError):
    """A task of the file server failed; the process ends (Kubernetes restarts it) rather than run half dead."""


class _NoLiveness:
    def beat(self) -> None:
        pass

    def set_watching(self, watching: bool) -> None:
        pass


class FileServer:
    """Follows every file the globs match and feeds complete lines to ``sink``; see the module docstring."""

    def __init__(self, config: FollowConfig, sink: Sink, observer: Observer, liveness: Liveness | None = None) -> None:
        self._config = config
        self._sink = sink
        self._observer = observer
        self._liveness: Liveness = liveness or _NoLiveness()
        self._store = CheckpointStore(config.checkpoint_dir)
        self._registry = Registry(observer)
        self._checkpointer = Checkpointer(self._store, self._registry, observer, config.checkpoint_interval,
                                          config.forget_after)
        self._discovery = Discovery(config, PathsProvider(config.paths, config.exclude), self._registry,
                                    Problems(observer), self._checkpointer.progressed, self._on_replaced)
        self._rotation = Rotation(self._registry, self._discovery, observer)
        self._watcher = make_watcher(config.watch)
        self._buffer = ReadBuffer(config.max_line_bytes, config.read_chunk_bytes)
        self._started = False
        self._deadline: float | None = None
        self._stop_began = 0.0
        self._dir_times: dict[str, int] = {}
        self._watched: set[str] = set()
        self._parked = False
        self._callback_error: BaseException | None = None
        self._handed: tuple[Tail, list[Batch]] | None = None
        self._round_ended = self._round_before = 0.0

    @property
    def open_files(self) -> int:
        return len(self._registry)

    # -- start-up -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the state file and open every matching file at its saved (or initial) position."""
        self._store.prepare()
        first_start = not self._store.exists()
        try:
            entries = self._store.load(on_dropped=lambda _: self._observer.read_error("checkpoint", "bad_entry"))
        except CheckpointError as exc:
            aside = self._store.quarantine()
            log.error("checkpoint_unreadable", error=str(exc), moved_to=str(aside))
            self._observer.read_error("checkpoint", "corrupt")
            entries = []
        for entry in entries:
            self._registry.remember(entry)
        self._discovery.scan(first_start=first_start, startup=True)
        self._rotation.resume_saved()
        self._watch_dirs()
        self._started = True

    def _on_replaced(self, tail: Tail, head: bytes) -> None:
        self._rotation.truncated(tail, head)

    def _watch_dirs(self) -> None:
        dirs = self._discovery.paths.watch_dirs() | self._registry.directories()
        self._watcher.watch(dirs)
        self._watched = dirs

    def _watch_new_dirs(self) -> None:
        """Cheap enough for every event batch: add the directories of files opened since, if any are new."""
        if not self._registry.directories() <= self._watched:
            self._watch_dirs()

    # -- names --------------------------------------------------------------------------------------

    def _on_names(self, events: list[NameEvent]) -> None:
        """Names, straight from the watcher: open matching files now, then see what the new ones displaced.

        A sibling created while a file still held its name can only be a copy of it (copytruncate); one
        that appeared after the name moved is a generation. The order of the events tells which, and the
        copies are looked at first: the generation search of a newcomer opened before would take them for
        generations. A new file at a followed symlink's target matches no glob: it is opened under the link,
        once the files it displaced were looked at, as the reader's rescan would open it. Files found within
        one tick of the file clock are ordered by the events (:meth:`Rotation.arrivals`).
        """
        if self._deadline is not None:
            return
        try:
            with self._rotation.arrivals(events):
                self._act_on(events)
        except Exception as exc:  # raised again by the reader, which ends the process with it
            self._callback_error = exc
            self._watcher.wake()

    def _act_on(self, events: list[NameEvent]) -> None:
        dirs = {os.path.dirname(e.path) for e in events}
        for tail in self._in(dirs):
            copies = _created_before_it_moved(tail, events)
            if copies:
                self._rotation.check_copies(tail, only=copies)
        self._open_appeared(events, self._discovery.consider_path)
        for tail in self._in(dirs):
            self._rotation.check_name(tail)
        self._open_appeared(events, self._discovery.consider_target)
        for path in dict.fromkeys(e.path for e in events):
            self._search_orphaned(path)
        self._watch_new_dirs()

    def _in(self, dirs: set[str]) -> list[Tail]:
        """The followed files in ``dirs``, by name or by real path (a snapshot: checking them opens files)."""
        return [t for t in self._registry if os.path.dirname(t.path) in dirs or os.path.dirname(t.real) in dirs]

    def _open_appeared(self, events: list[NameEvent], consider: Callable[[str], Tail | None]) -> None:
        for event in events:
            tail = consider(event.path) if event.appeared else None
            if tail is not None:
                self._opened(tail, self._discovery.last_scan)

    def _rescan(self) -> None:
        """Check every name (the safety net under the watcher), then look for new files."""
        known_at: dict[str, FileKey] = {}
        for tail in self._registry:
            self._rotation.check_name(tail, known_at)
        since = self._discovery.last_scan
        for tail in self._discovery.scan(known_at=known_at):
            self._opened(tail, since)
        for path in self._discovery.paths.literal_paths():
            self._search_orphaned(path, since)
        self._watch_dirs()

    def _opened(self, tail: Tail, since: float | None) -> None:
        """A file just followed by its name: what its arrival displaced, generations beside it written since
        our last look and, under a symlink, the targets the link had meanwhile."""
        if since is not None:
            self._rotation.find_generations(tail.real, tail.pattern, since, tail.family)
        self._rotation.relinked(tail)

    def _search_orphaned(self, path: str, since: float | None = None) -> None:
        """A name a glob matches, with no file of ours holding it (gone, or never seen): generations rotated
        away from it meanwhile are beside it, and nobody else would look for them."""
        pattern = self._discovery.paths.match(path)
        if pattern is None:
            return
        real = os.path.realpath(path)
        if self._registry.holder_for(real) is not None:
            return
        look_from = since if since is not None else self._discovery.last_scan
        if look_from is not None:
            self._rotation.find_generations(real, pattern, look_from, path)

    def _check_dirs(self) -> None:
        """A directory that changed may hold a copy made while we could not look: check its files' copies."""
        for directory, tails in list(self._registry.holding_names().items()):
            try:
                mtime = os.stat(directory).st_mtime_ns
            except OSError:
                continue
            if self._dir_times.get(directory, mtime) != mtime:
                for tail in tails:
                    self._rotation.check_copies(tail)
            self._dir_times[directory] = mtime

    # -- reading ------------------------------------------------------------------------------------

    def _take(self, tail: Tail, looked: float) -> Chunk | bool:
        """Read one chunk from ``tail`` (at wall time ``looked``): the chunk to emit, True when something
        else happened (a truncation, or a copy found that changed the reading order), False when nothing did.

        A file of which we know no byte yet cannot show a truncation by its size or head: before reading it,
        look for copies made since our last look (copytruncate while we were stopped), and again after its
        first chunk, since we may have been stopped between the look and the read.
        """
        knew = None
        if tail.pos == 0 and tail.rotated is None:
            order = self._registry.version
            self._watcher.names_now()
            if tail.rotated is not None or tail.fd < 0:
                return True
            self._rotation.check_copies(tail)
            if self._registry.version != order:
                return True
            knew = tail.fp
        try:
            result = tail.read(self._buffer)
        except OSError as exc:
            self._discovery.problems.cannot_read(tail.path, tail.pattern, exc)
            if tail.rotated is not None:  # unread, it would hold back its family's newer files for ever
                self._abandon(tail, f"reading it failed: {exc.strerror}")
            return False
        if isinstance(result, Truncated):
            self._rotation.truncated(tail, result.head)
            return True
        tail.looked_at = looked
        if result is not None and knew is not None and not knew.length and (
                self._rotation.copied_before_read(tail, knew)):
            return True
        return False if result is None else result

    def _batches(self, tail: Tail, chunk: Chunk, split: bool = True) -> list[Batch]:
        """The chunk's pieces as batches, each registered with the ledger now: a truncation noticed while the
        sink waits restarts the tail on a new ledger, and these bytes belong to the old one."""
        batches = []
        for piece in chunk.pieces:
            self._count_read(tail, piece, split)
            batches.append(tail.batch(piece, chunk.base))
        return batches

    def _count_read(self, tail: Tail, piece: Piece, split: bool = True) -> None:
        """Count a piece as read; a piece cut from a line over --max-line-bytes counts that line once."""
        if piece.start >= 0:
            tail.splitting = False
        elif split and not tail.splitting:
            self._observer.long_line(tail.pattern)
            tail.splitting = True
        self._observer.read(tail.pattern, piece.lines, len(piece.data))

    async def _emit(self, tail: Tail, chunk: Chunk, split: bool = True) -> None:
        tail.in_sink += 1
        await self._hand(tail, self._batches(tail, chunk, split))

    async def _hand(self, tail: Tail, batches: list[Batch]) -> None:
        """Give the batches to the sink, counted in ``tail.in_sink`` by the caller: the tail's descriptor
        stays open until the sink returns."""
        self._parked = True
        try:
            for batch in batches:
                await self._sink.emit(batch)
        finally:
            tail.in_sink -= 1
            self._parked = False
        if tail.give_up and tail.in_sink == 0 and tail.fd >= 0:
            self._give_up(tail, tail.give_up)

    def _serve_now(self, changes: Changes) -> bool:
        """The quick path: writes to followed files, served while the reader waits (on the data descriptor's
        thread in the loop's sleep, or from the loop itself); True when served whole.

        A line written now and then would otherwise cost a wake-up of the reader task, which takes more CPU
        than the line. Only the plain case is served here, a round's own steps in the same order (read,
        frame, offer, write), after the reader's pause when writes keep coming; anything that needs waiting
        or a look around (a sink holding back, a file with more to read, a truncation, rotated files) is
        left to the reader, woken for it. The lines of a round of one file are written at once when the sink
        can (:meth:`_written_now`). Batches already read and refused by the sink are handed to the
        reader, which gives them to the sink before it reads anything else; a batch is offered again once
        after a flush (a sink that gathered enough to write may take more once it wrote).
        """
        if self._deadline is not None or self._callback_error is not None or self._registry.has_rotated:
            return False
        if self._writes_keep_coming():
            time.sleep(BATCH_PAUSE)
            if not self._watcher.take_queued(changes):
                return False
        try:
            looked = time.time()
            tails = self._registry.to_read(changes.paths, ())
            alone = len(tails) == 1
            for tail in tails:
                taken = self._take(tail, looked)
                if taken is True:
                    return False
                if isinstance(taken, Chunk) and not (alone and self._written_now(tail, taken)):
                    batches = self._batches(tail, taken)
                    for index, batch in enumerate(batches):
                        if not (self._sink.offer(batch) or (self._sink.flush_now() and self._sink.offer(batch))):
                            tail.in_sink += 1
                            self._handed = (tail, batches[index:])
                            return False
                if not tail.at_eof:
                    return False
            if not self._sink.flush_now():
                return False
        except Exception as exc:  # raised again by the reader, which ends the process with it
            self._callback_error = exc
            return False
        self._end_round()
        self._checkpointer.caught_up()
        self._liveness.beat()
        return True

    def _written_now(self, tail: Tail, chunk: Chunk) -> bool:
        """Whether the sink wrote the chunk's lines at once (:meth:`Sink.write_now`): one run of whole lines of
        a file with nothing in the sink, the only file the round reads (lines of many files are gathered into
        one write instead). Its position then moves past them here; no batch is made."""
        if len(chunk.pieces) != 1 or tail.in_sink or not tail.ledger.idle:
            return False
        piece = chunk.pieces[0]
        if piece.start < 0 or not self._sink.write_now(tail.source, piece.data, piece.lines):
            return False
        self._count_read(tail, piece)
        tail.ledger.advance(chunk.base + piece.end)
        return True

    def _end_round(self) -> None:
        self._round_before, self._round_ended = self._round_ended, time.monotonic()

    def _writes_keep_coming(self) -> bool:
        """See :data:`BUSY_WAKE`."""
        ended = self._round_ended
        return time.monotonic() - ended < BUSY_WAKE and ended - self._round_before < 2 * BUSY_WAKE

    async def _read_round(self, tails: Iterable[Tail], sweep: Sweep | None = None) -> bool:
        """Batches the quick path handed over, then one chunk from each of ``tails``, in order, then the
        sink's flush; True when anything was read. A ``sweep`` (every file, on a poll) skips the files that
        look unchanged, judged by their times or by their size (see :meth:`Tail.unchanged`)."""
        handed, self._handed = self._handed, None
        if handed is not None:
            await self._hand(*handed)
        busy = await self._read_each(tails, sweep)
        await self._sink.flush()
        return busy

    async def _read_each(self, tails: Iterable[Tail], sweep: Sweep | None) -> bool:
        """One chunk from each of ``tails``, in order; True when anything was read.

        Within a family an older file still being read holds the newer ones back (old before new), and a
        round ends early when the registry's order changed (a copy or a generation was found), so that the
        next round reads in the new order.
        """
        busy = False
        held: set[str] = set()
        order = self._registry.version
        looked = time.time()
        for tail in tails:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                break
            if tail.fd < 0:
                continue
            if tail.family in held:
                tail.at_eof = False
                continue
            if not (sweep and tail.rotated is None and tail.unchanged(by_size=sweep == "by_size")):
                taken = self._take(tail, looked)
                if isinstance(taken, Chunk):
                    await self._emit(tail, taken)
                    busy = True
                elif taken:
                    busy = True
            if self._registry.version != order:
                return True
            if tail.rotated is not None and not tail.at_eof:
                held.add(tail.family)
        return busy

    async def _follow(self, stop: asyncio.Event) -> None:
        """The reader: one chunk per file per round, woken by the watcher, until ``stop``; then the drain."""
        changes = Changes(everything=True)
        hot: set[Tail] = set()
        busy = False
        watching = False
        yielded = time.monotonic()
        while not stop.is_set():
            self._liveness.beat()
            if self._callback_error is not None:
                raise self._callback_error
            if changes.structure:
                self._rescan()
            wanted = list(self._registry) if changes.everything else self._registry.to_read(changes.paths, hot)
            sweep: Sweep | None = None
            if changes.everything:
                sweep = "by_size" if self._watcher.live and not changes.lost else "by_times"
            await self._read_round(wanted, sweep)
            hot = {t for t in wanted if not t.at_eof and t.fd >= 0}
            if self._registry.has_rotated:
                await self._close_finished()
            if hot:
                changes = Changes()
                if time.monotonic() - yielded >= YIELD_EVERY:
                    await asyncio.sleep(0)
                    yielded = time.monotonic()
                continue
            self._checkpointer.caught_up()
            if not watching and len(self._registry):
                self._liveness.set_watching(True)
                watching = True
            if busy:
                time.sleep(BATCH_PAUSE)
            self._end_round()
            changes = await self._watcher.wait(self._config.poll_interval * (SWEEP_EVERY if self._watcher.live else 1))
            busy = self._writes_keep_coming()
        await self._drain()

    async def _drain(self) -> None:
        """Read what is readable now (with --drain-timeout: what arrives until files are quiet), by the deadline.

        Partial lines are not emitted here: they stay in the checkpoint and come out whole after a restart.
        """
        deadline = self._stopping()
        quiet_since = time.monotonic()
        quiet_for = min(QUIET_AFTER_STOP, self._config.drain_timeout)
        while True:
            busy = await self._read_round(self._registry)
            await asyncio.sleep(0)
            now = time.monotonic()
            if now >= deadline:
                if busy:
                    log.warning("drain_deadline", hint="files still had lines; they stay in the checkpoint")
                return
            if busy:
                quiet_since = now
                continue
            if not quiet_for or now - quiet_since >= quiet_for:
                return
            await self._watcher.wait(min(0.1, deadline - now))

    # -- letting go ---------------------------------------------------------------------------------

    async def _close_finished(self) -> None:
        """Close rotated-away files that were read to the end and stayed quiet for ``--rotate-wait``."""
        now = time.monotonic()
        for tail in [t for t in self._registry.rotated() if t.at_eof and t.fd >= 0]:
            if now - tail.last_growth < self._config.rotate_wait:
                continue
            taken = self._take(tail, time.time())
            if isinstance(taken, Chunk):
                await self._emit(tail, taken)
            if taken or tail.fd < 0:
                continue
            unfinished = tail.unfinished()
            if unfinished is not None:
                piece, base = unfinished
                await self._emit(tail, Chunk([piece], base), split=False)
                await self._sink.flush()
            if tail.ledger.idle and tail.in_sink == 0 and tail.fd >= 0:
                self._registry.release(tail)

    def _give_up_overdue(self) -> None:
        """A rotated file the sink could not take in ``--rotate-wait-max`` (receiver down for long) is given up,
        so that a deleted file's disk space is not held for ever; its unread bytes are counted. A file the
        sink may still be copying from in the kernel is given up when the sink returns."""
        now = time.monotonic()
        for tail in self._registry.rotated():
            if now - tail.rotated_at >= self._config.rotate_wait_max:
                self._abandon(tail, "the sink did not take it within --rotate-wait-max")

    def _abandon(self, tail: Tail, why: str) -> None:
        """Give up a rotated file now, or when the sink returns if it may still be copying from it."""
        if tail.in_sink and self._sink.reads_descriptor:
            tail.give_up = why
        else:
            self._give_up(tail, why)

    def _give_up(self, tail: Tail, why: str) -> None:
        try:
            size = os.fstat(tail.fd).st_size
        except OSError:
            size = tail.size
        unread = max(size - tail.ledger.committed, 0)
        if unread:
            self._observer.given_up(tail.pattern, unread)
            log.warning("rotated_file_given_up", path=tail.path, unread_bytes=unread, hint=why)
        self._registry.release(tail, skip_to=size)

    # -- housekeeping -------------------------------------------------------------------------------

    def _report(self) -> None:
        """Backlog and its age: every poll, over every file, so written for the file that is not behind."""
        now = time.monotonic()
        behind = 0
        oldest = now
        for tail in self._registry:
            lag = tail.size - tail.ledger.committed
            if lag <= 0:
                tail.behind_since = None
                continue
            behind += lag
            since = tail.behind_since
            if since is None:
                tail.behind_since = now
            elif since < oldest:
                oldest = since
        self._observer.files_watched(len(self._registry))
        self._observer.backlog(behind, now - oldest)

    async def _keep_house(self, finished: asyncio.Event) -> None:
        """Every poll interval: look for new files, copies and overdue files, report.

        With a watcher that reports changes as they happen, new names are followed from its events, and
        rescanning the globs, checking every name and every file's size is a safety net for what it may
        miss (an overflow, a filesystem without events): done every :data:`SWEEP_EVERY` polls, so that
        thousands of idle files cost next to nothing.
        """
        polls = 0
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), self._config.poll_interval)
            if finished.is_set():
                return
            polls += 1
            sweep = not self._watcher.live or polls % SWEEP_EVERY == 0
            if self._deadline is None:
                if sweep:
                    self._rescan()
                self._check_dirs()
            self._give_up_overdue()
            self._report()
            if sweep:
                self._checkpointer.forget_stale()
            if self._parked:
                self._liveness.beat()

    # -- the whole ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set, drain what is readable, flush the sink and checkpoint."""
        if not self._started:
            self.start()
        self._watcher.start(self._on_names, self._serve_now)
        finished = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._keep_house(finished), name="housekeeping")
                group.create_task(self._checkpointer.run(finished), name="checkpointer")
                reader = group.create_task(self._follow(stop), name="reader")
                await self._stop_when_asked(stop, reader)
                finished.set()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self._checkpointer.save_final()
            self._store.close()
            self._registry.close_all()
            self._watcher.close()
            log.info("stopped", files=len(self._registry), checkpoint=str(self._store.path))

    def _stopping(self) -> float:
        """Note that we stop (once, whoever notices first) and return the deadline for reading."""
        if self._deadline is None:
            self._stop_began = time.monotonic()
            drain_timeout = self._config.drain_timeout
            self._deadline = self._stop_began + (drain_timeout if drain_timeout > 0 else READ_GRACE)
        return self._deadline

    async def _stop_when_asked(self, stop: asyncio.Event, reader: asyncio.Task[None]) -> None:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        deadline = self._stopping()
        self._watcher.wake()
        if not reader.done():
            await asyncio.wait({reader}, timeout=deadline - time.monotonic() + 0.5)
        if not reader.done():
            log.warning("drain_timed_out", hint="the sink did not take the last lines; they stay in the checkpoint")
            reader.cancel()
            await asyncio.wait({reader})
        end = self._stop_began + self._config.drain_timeout + EXIT_GRACE
        await self._sink.drain(timeout=max(end - time.monotonic(), 0.5))


def _created_before_it_moved(tail: Tail, events: list[NameEvent]) -> set[str]:
    """Siblings of ``tail`` created (as copytruncate creates its copy; a shift of an older generation is a
    move, not a create) before the tail's own name (or its link) went away: they can only be its copies.
    Renames are followed, so a copy created as ``app.log.1`` and shifted to ``app.log.2`` counts under its
    name now."""
    base = os.path.basename(tail.real)
    created: set[str] = set()
    moving: dict[int, str] = {}
    for event in events:
        if event.change == "gone":
            if event.path in (tail.path, tail.real):
                break
            if event.path in created and event.cookie:
                created.discard(event.path)
                moving[event.cookie] = event.path
        elif event.change == "moved_in" and moving.pop(event.cookie, None) is not None:
            created.add(event.path)
        elif event.change == "created":
            name = os.path.basename(event.path)
            if name != base and name.startswith(base):
                created.add(event.path)
    return created


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to end the process with: ours as it is, anything else named with its task."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, SidecarError | KeyboardInterrupt | SystemExit):
        return exc
    log.error("task_failed", error=repr(exc), trace="".join(traceback.format_exception(exc)).strip())
    failed = TaskFailed(f"internal error, exiting so that the pod restarts: {exc!r}")
    failed.__cause__ = exc
    return failed

