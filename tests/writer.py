"""An application that writes numbered log lines and rotates its files the ways real ones do.

Exactly-once tests need to know, for every line the sidecar prints, which line it was meant to be and
whether its bytes survived. Each line is ``<stream> <seq:08d> <payload>\\n`` where the payload's length
and letters are a function of ``(stream, seq)``: a line cut short, glued to another or shifted by a
wrong offset no longer matches its own number, so :mod:`tests.checker` can tell lost, duplicated and
corrupted lines apart. Payload lengths vary (0 to ~200 bytes) so that read boundaries fall everywhere.

:class:`LogWriter` keeps its file open the way an application does (``O_APPEND``, so writes after a
copytruncate land at the new end instead of leaving a hole), and offers the rotations as methods.
:class:`BackgroundWriter` runs one in a thread while something else (``logrotate``) rotates.

Run as a script to produce lines by hand when reproducing a failure::

    python -m tests.writer /tmp/logs/app.log --lines 1000 --rotate-every 100 --interval 0.001
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_MAX_PAYLOAD = 200


def payload(stream: str, seq: int) -> bytes:
    """The payload of line ``seq`` of ``stream``: its length and letters depend on both."""
    salt = zlib.crc32(stream.encode())
    length = (seq * 7919 + salt) % (_MAX_PAYLOAD + 1)
    start = (seq * 31 + salt) % len(_ALPHABET)
    repeated = _ALPHABET[start:] + _ALPHABET * (length // len(_ALPHABET) + 1)
    return repeated[:length]


def make_line(stream: str, seq: int) -> bytes:
    """One complete numbered line, ending in ``\\n``."""
    return b"%s %08d %s\n" % (stream.encode(), seq, payload(stream, seq))


def make_lines(stream: str, seqs: Iterable[int]) -> bytes:
    """Several numbered lines in the given order, as one byte string."""
    return b"".join(make_line(stream, seq) for seq in seqs)


class LogWriter:
    """A log-writing application: one stream of numbered lines into one path, with its rotations.

    ``written`` lists the sequence numbers whose complete line reached a file, in order; a line begun
    with :meth:`write_partial` joins it only once :meth:`write` or :meth:`finish_partial` completes it.
    ``files`` splits ``written`` by the file (inode) the lines went into, for the checker's order within
    each file: a new one begins when the writer opens another file (a reopen after a rename, a delete).
    A truncation keeps the file, so the lines written after a copytruncate must still follow those
    before it, even though the sidecar reads part of those from the copy.
    """

    _open: ClassVar[set[LogWriter]] = set()

    def __init__(self, path: Path, stream: str = "app", first_seq: int = 0) -> None:
        self.path = path
        self.stream = stream
        self.next_seq = first_seq
        self.written: list[int] = []
        self.files: list[list[int]] = [[]]
        self._pending = b""  # the rest of a line started by write_partial
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        """The open descriptor, opening (and so creating) ``path`` if the file was let go."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            LogWriter._open.add(self)
        return self._fd

    def write(self, count: int = 1, *, batch: bool = True) -> range:
        """Append ``count`` complete lines (finishing a partial line first); returns their numbers.

        ``batch`` writes them with one ``write`` call, as a buffered logger flushing does; otherwise
        one call per line, so a follower sees the file grow line by line.
        """
        self.finish_partial()
        seqs = range(self.next_seq, self.next_seq + count)
        if batch:
            self._write_all(make_lines(self.stream, seqs))
        else:
            for seq in seqs:
                self._write_all(make_line(self.stream, seq))
        self.next_seq += count
        self.written.extend(seqs)
        self.files[-1].extend(seqs)
        return seqs

    def write_partial(self, nbytes: int | None = None) -> int:
        """Write the first ``nbytes`` of the next line (default: all but its newline) and stop there."""
        self.finish_partial()
        line = make_line(self.stream, self.next_seq)
        cut = len(line) - 1 if nbytes is None else min(nbytes, len(line) - 1)
        self._write_all(line[:cut])
        self._pending = line[cut:]
        return self.next_seq

    def finish_partial(self) -> None:
        """Complete a line begun by :meth:`write_partial`, if any."""
        if self._pending:
            self._write_all(self._pending)
            self._pending = b""
            self.written.append(self.next_seq)
            self.files[-1].append(self.next_seq)
            self.next_seq += 1

    def abandon_partial(self) -> None:
        """Forget a begun line without completing it (its bytes stay in the file without a newline)."""
        if self._pending:
            self._pending = b""
            self.next_seq += 1

    def rename_rotate(self, dest: Path, *, late_lines: int = 0) -> None:
        """Rename the file away and reopen ``path``, after ``late_lines`` more lines to the old descriptor.

        The late lines are what an application writes between the rename and noticing it, the case
        that loses lines in followers which close the rotated file at once.
        """
        os.rename(self.path, dest)
        if late_lines:
            self.write(late_lines)
        self.reopen()

    def copytruncate(self, dest: Path) -> None:
        """Copy the file to ``dest`` and truncate it, as logrotate's ``copytruncate`` does (without its window)."""
        shutil.copyfile(self.path, dest)
        os.truncate(self.path, 0)

    def truncate(self) -> None:
        """Truncate the file in place; lines not yet read are gone for good."""
        os.truncate(self.path, 0)

    def delete(self) -> None:
        """Unlink the file and let go of it; the next write creates a new one."""
        os.unlink(self.path)
        self.close()
        self._next_file()

    def reopen(self) -> None:
        """Close and reopen ``path`` (creating it), as an application does on SIGHUP after a rotation."""
        self.close()
        self._next_file()
        _ = self.fd

    def close(self) -> None:
        """Close the descriptor; a begun line stays as it is."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        LogWriter._open.discard(self)

    @classmethod
    def close_all(cls) -> None:
        """Close every writer still open: a test's writers must not pile up descriptors in the run."""
        for writer in list(cls._open):
            writer.close()

    def _next_file(self) -> None:
        if self.files[-1]:
            self.files.append([])

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


class BackgroundWriter(threading.Thread):
    """Writes numbered lines to one path at a steady pace until stopped, so rotations race with writes."""

    def __init__(self, writer: LogWriter, interval: float = 0.001, per_write: int = 1) -> None:
        super().__init__(daemon=True, name=f"writer-{writer.stream}")
        self.writer = writer
        self.interval = interval
        self.per_write = per_write
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            with self._lock:
                self.writer.write(self.per_write)

    def reopen(self) -> None:
        """Reopen the path between two writes, as the application does when logrotate's postrotate signals it."""
        with self._lock:
            self.writer.reopen()

    def wait_written(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` lines have been written."""
        deadline = time.monotonic() + timeout
        while len(self.writer.written) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer wrote only {len(self.writer.written)} of {count} lines")
            time.sleep(0.005)

    def stop(self) -> list[int]:
        """Stop writing and return every sequence number written."""
        self._stop_event.set()
        self.join(timeout=10)
        with self._lock:
            self.writer.close()
            return list(self.writer.written)


def main() -> None:
    """Write numbered lines, renaming the file every ``--rotate-every`` lines (for reproducing by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", type=Path)
    parser.add_argument("--stream", default="app")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--rotate-every", type=int, default=0, help="rename to PATH.N every N lines; 0: never")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between lines")
    args = parser.parse_args()
    writer = LogWriter(args.path, args.stream)
    for index in range(args.lines):
        writer.write(1)
        if args.rotate_every and (index + 1) % args.rotate_every == 0:
            writer.rename_rotate(args.path.with_name(f"{args.path.name}.{(index + 1) // args.rotate_every}"))
        if args.interval:
            time.sleep(args.interval)
    writer.close()


if __name__ == "__main__":
    main()
