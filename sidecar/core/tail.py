"""One open file generation: its descriptor, where we read, what the sink confirmed, what we know of its bytes.

A :class:`Tail` owns its descriptor from open to close. The server may only close it when the sink is not
using it (:attr:`Tail.in_sink`): a sink may still be copying from the descriptor in the kernel
(``sendfile``), and a closed number can be reused by another file at once.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.core.checkpoint import Entry, EntryText
from sidecar.core.events import RotationKind
from sidecar.core.identity import FP_BYTES, MARK_BYTES, FileKey, Fingerprint, mark_of, read_head
from sidecar.core.ledger import Ledger
from sidecar.core.lines import NewlineCounter, Piece, frame
from sidecar.core.sink import Batch, FileRef, Source

LEAD = MARK_BYTES
"""Room at the buffer's start for the offset marker, read again in front of every chunk."""


class ReadBuffer:
    """The one buffer every read goes through: the marker, a pending partial line, and one read.

    An anonymous memory map, not a ``bytearray``: a ``bytearray`` is zeroed when made, so all of its
    1.5 MiB (by default) would be resident from the start, while a map's pages become resident only once a
    read reaches them. Following quiet files touches the first few kilobytes alone.
    """

    __slots__ = ("buf", "counter", "max_line", "read_size", "view")

    def __init__(self, max_line: int, read_chunk: int) -> None:
        self.max_line = max_line
        self.read_size = min(read_chunk, max_line)
        self.buf = mmap.mmap(-1, LEAD + max_line + self.read_size)
        self.view = memoryview(self.buf)
        self.counter = NewlineCounter()


@dataclass(frozen=True, slots=True)
class Truncated:
    """The file no longer holds what we read (shrunk, or rewritten in place); ``head`` is what it holds now."""

    head: bytes


@dataclass(slots=True)
class Chunk:
    """Complete lines read in one go; ``base`` is the file offset the buffer's first byte stands for. Not
    frozen: one is made per read, and a frozen dataclass takes three times as long to make."""

    pieces: list[Piece]
    base: int


class Tail:
    """A file we hold open, followed by identity; see the module docstring.

    ``looked_at`` is when a read last found the content as we knew it; ``known_since`` when we began to
    know the file (now, or the state file's time for a file resumed after a restart): a copy of it cannot
    be older. ``family`` is the name (the path a glob found) whose successive generations and copies this file
    belongs to: within a family, an older file is read to its end before a newer one is read on. ``named`` is
    the real name its copies extend: the one it had when we knew it by name, also once found away from it
    after a restart (``app.log`` for a file resumed at ``app.log.5``).
    """

    __slots__ = (
        "_looked_sig",
        "_mark",
        "_on_advance",
        "_text",
        "at_eof",
        "before",
        "behind_since",
        "family",
        "fd",
        "fp",
        "generation",
        "give_up",
        "in_sink",
        "key",
        "known_since",
        "last_growth",
        "ledger",
        "looked_at",
        "named",
        "path",
        "pattern",
        "pending",
        "pos",
        "real",
        "rotated",
        "rotated_at",
        "seen_at_path",
        "size",
        "source",
        "splitting",
    )

    def __init__(self, key: FileKey, fd: int, path: str, pattern: str, offset: int, fp: Fingerprint,
                 on_advance: Callable[[int], None], rotated: RotationKind | None = None, family: str | None = None,
                 opened_at: float | None = None) -> None:
        now = time.monotonic()
        wall = time.time() if opened_at is None else opened_at
        self.key = key
        self.fd = fd
        self.path = path
        real = os.path.realpath(path)
        self.real = path if real == path else real  # one string, not two equal ones, per file
        self.named = self.real
        self.pattern = pattern
        self.family = family or path
        self.pos = offset
        self.fp = fp
        self._on_advance = on_advance
        self.ledger = Ledger(offset, on_advance)
        self.pending = b""
        self.before = b""
        self.generation = 0
        self.rotated: RotationKind | None = rotated
        self.rotated_at = now
        self.at_eof = False
        self.last_growth = now
        self.seen_at_path = wall
        self.looked_at = wall
        self.known_since = wall
        self._looked_sig: int | None = None
        self._mark: tuple[int, str, int] = (-1, "", 0)
        self._text: EntryText | None = None
        self.size = 0
        self.behind_since: float | None = None
        self.in_sink = 0
        self.give_up = ""  # why a rotated file is given up once the sink returns
        self.splitting = False  # inside a line over --max-line-bytes: its pieces count as one
        self.source = self._source()

    def _source(self) -> Source:
        return Source(self.path, self.pattern, FileRef(self.key.dev, self.key.ino, self.generation))

    @property
    def resume(self) -> int:
        """Where reading would restart after a crash: just past the last complete line read."""
        return self.pos - len(self.pending)

    def marker_at_resume(self) -> bytes:
        """The bytes just before :attr:`resume`, as far as we hold them: those before our position, less the
        partial line at its end."""
        cut = len(self.before) - len(self.pending)
        return self.before[:cut] if cut > 0 else b""

    def read(self, buffer: ReadBuffer) -> Chunk | Truncated | None:
        """Read one chunk and frame it; None when there is nothing new. Raises OSError.

        The read starts at the offset marker, the bytes just before our position, so that one system call
        both checks that the file still holds what we read there and fetches what is new. The head is
        read separately only while it can tell more than the marker: the file is small, or we hold no
        marker (just resumed).
        """
        before = self.before
        marked = len(before)
        if marked < MARK_BYTES or self.fp.length < FP_BYTES:
            head = read_head(self.fd)
            if not self.fp.matches(head):
                return Truncated(head)
            if not self.fp.complete and len(head) > self.fp.length:
                self.fp = Fingerprint.of(head)
        pending = self.pending
        buf, view, size = buffer.buf, buffer.view, buffer.read_size
        start = LEAD + len(pending)
        if pending:
            buf[LEAD:start] = pending
        pos = self.pos
        got = os.preadv(self.fd, [view[start - marked : start + size]], pos - marked) - marked
        if got < 0 or (marked and buf[start - marked : start] != before):
            return Truncated(read_head(self.fd))
        if got == 0:
            if not marked and pos and os.fstat(self.fd).st_size < pos:
                return Truncated(read_head(self.fd))
            if self.size < pos:  # noqa: PLR1730 - max() costs a call per read
                self.size = pos
            self.at_eof = True
            return None
        end = start + got
        self.pos = now = pos + got
        if self.size < now:  # noqa: PLR1730
            self.size = now
        self.at_eof = got < size
        self.last_growth = time.monotonic()
        self.before = buf[end - MARK_BYTES if got > MARK_BYTES - marked else start - marked : end]
        pieces, rest = frame(buf, view, end, buffer.max_line, buffer.counter, LEAD)
        self.pending = bytes(view[rest:end]) if rest < end else b""
        return Chunk(pieces, pos - start)

    def resumed(self, seen: float) -> None:
        """This tail continues a file saved at ``seen``: copies made since then may hold its bytes."""
        self.looked_at = self.known_since = seen

    def unchanged(self, by_size: bool = False) -> bool:
        """True when a poll need not read the file (one ``fstat`` instead of three calls): we read all of it and
        its size and times are what they were at the last call or, ``by_size``, its size is where we stopped.

        ``by_size`` is for a sweep while changes are reported as they happen and none were lost: content
        rewritten in place at the same size sends events of its own, and so is read then; without any (an
        ``mmap`` writer), the offset marker still sees it at the file's next growth. Following thousands of
        files that each got a line since the last sweep, the sweep then reads none of them again.
        """
        try:
            st = os.fstat(self.fd)
        except OSError:
            return False
        if by_size:
            return st.st_size == self.pos and self.at_eof
        sig = hash((st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        same = sig == self._looked_sig and st.st_size == self.pos and self.at_eof
        self._looked_sig = sig
        return same

    def batch(self, piece: Piece, base: int) -> Batch:
        """The sink's view of ``piece``; committing it moves this generation's ledger."""
        offset = base + piece.start if piece.start >= 0 else -1
        commit = self.ledger.add(base + piece.end)
        return Batch(self.source, piece.data, piece.lines, self.fd, offset, commit)

    def unfinished(self) -> tuple[Piece, int] | None:
        """The incomplete last line, with a newline of our own, for a file we let go (it can never complete)."""
        if not self.pending:
            return None
        data, self.pending = self.pending + b"\n", b""
        piece = Piece(memoryview(data), 1, -1, len(data) - 1)
        return piece, self.pos - piece.end

    def restart(self, head: bytes) -> None:
        """The content was replaced (truncated, rewritten): follow the new content from its first byte."""
        self.pos = 0
        self.generation += 1
        self.pending = b""
        self.before = b""
        self.fp = Fingerprint.of(head)
        self.ledger = Ledger(0, self._on_advance)
        self.at_eof = False
        self.source = self._source()

    def unread(self, knew: Fingerprint) -> None:
        """Forget the chunk just read from byte 0 (not emitted): we know again only ``knew`` of the file."""
        self.pos = 0
        self.pending = self.before = b""
        self.fp = knew

    def let_go(self, kind: RotationKind) -> None:
        """Its name now belongs to another file (or none): read on to the end, then close."""
        self.rotated = kind
        self.rotated_at = time.monotonic()
        self.at_eof = False

    def holds_known_bytes(self, fd: int, size: int) -> bool:
        """Whether the file on ``fd`` (``size`` bytes) begins with every byte we know of this one's content.

        Checked are the fingerprinted head and the bytes just before our position (an offset marker, as
        Fluent Bit keeps one): two files that only share a banner or a CSV header are told apart.
        """
        if size < self.fp.length or not self.fp.matches(os.pread(fd, self.fp.length, 0)):
            return False
        mark = self.before
        if not mark or self.pos <= self.fp.length or size < self.pos:
            return True
        return os.pread(fd, len(mark), self.pos - len(mark)) == mark

    def entry(self, now: float) -> Entry:
        committed, mark, length = self._marked()
        return Entry(self.key.dev, self.key.ino, self.fp.digest, self.fp.length, committed, self.real, self.pattern,
                     now, mark=mark, mark_len=length)

    def entry_text(self, seen: str) -> str:
        """:meth:`entry` as the state file holds it, without building it (see :class:`EntryText`); ``seen`` is
        the time in JSON."""
        if self._text is None:
            self._text = EntryText(self.real, self.pattern)
        committed, mark, length = self._marked()
        return self._text.render(self.key, self.fp, committed, seen, mark, length)

    def _marked(self) -> tuple[int, str, int]:
        """The committed position and its offset marker, taken again only when the position moved."""
        committed = self.ledger.committed
        if self._mark[0] != committed and self.fd >= 0:
            length = min(MARK_BYTES, committed)
            before = self.before
            try:
                if committed == self.pos and len(before) >= length:
                    mark = mark_of(before[len(before) - length :]) if length else ""
                else:
                    mark = mark_of(os.pread(self.fd, length, committed - length)) if length else ""
            except OSError:
                mark, length = "", 0
            self._mark = (committed, mark, length)
        return self._mark

