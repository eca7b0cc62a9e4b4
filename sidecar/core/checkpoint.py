"""The state file: where each known file was left, written so that a crash never corrupts it.

One small versioned JSON file per checkpoint directory. It is replaced atomically (temp file, every byte
written, fsync, read back, rename, fsync of the directory), so a reader sees the old state or the new one,
never half: a write that cannot complete (a full volume) fails and leaves the previous file in place.
Offsets in it only ever point just past a line the sink has confirmed: that is the whole delivery guarantee.

One sidecar per directory: :meth:`CheckpointStore.prepare` takes an exclusive ``flock`` on a lock file
there, held for the life of the process, because two writers would each emit every line and overwrite
each other's positions. The directory stays open from then on and two spare descriptors are kept, so the
state can still be saved when the process has run out of descriptors (thousands of followed files).

On load every entry is checked field by field: a bad entry is reported and dropped (its file is then
treated as new), since one bad value must neither crash every start nor stop checkpointing later.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from sidecar.core.identity import FP_BYTES, MARK_BYTES, FileKey, Fingerprint
from sidecar.errors import CheckpointError
from sidecar.log import get_logger

log = get_logger("sidecar.core")

STATE_FILE = "sidecar-state.json"
LOCK_FILE = "sidecar.lock"
VERSION = 1
_TMP_SUFFIX = ".tmp"
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
_READ_BACK_BYTES = 65536
_ENTRIES_PER_PIECE = 256
_SPARES = 2


@dataclass(slots=True)
class Entry:
    """One file's saved position, keyed by identity; ``path`` and ``pattern`` are for finding and reporting."""

    dev: int
    ino: int
    fingerprint: str
    fp_len: int
    offset: int
    path: str
    pattern: str
    seen: float
    gone_since: float | None = None
    mark: str = ""
    """Digest of the ``mark_len`` bytes just before ``offset``: tells a file rewritten with the same head
    (a banner, a CSV header) from the one we were reading, as Fluent Bit's offset marker does."""
    mark_len: int = 0

    def as_json(self) -> dict[str, object]:
        """The entry as the state file holds it (``dataclasses.asdict`` deep-copies: 20 µs an entry)."""
        return dict(zip(_FIELD_NAMES, _field_values(self), strict=True))


_FIELD_NAMES = tuple(f.name for f in fields(Entry))
_field_values = attrgetter(*_FIELD_NAMES)


class EntryText:
    """An open file's entry as the state file holds it, rebuilt around its names, encoded once per file.

    Every save rewrites every open file's entry (its position or ``seen`` time moved); formatting the
    fields around the JSON-encoded path and pattern costs a fraction of encoding each entry as JSON, which
    with thousands of files was most of a save. Only the names are kept: keeping the formatted identity
    too saved 0.4 ms a save of 3,000 files and cost ~1 MiB of peak RSS. The text is exactly what
    ``json.dumps(entry.as_json())`` gives.
    """

    __slots__ = ("_names",)

    def __init__(self, path: str, pattern: str) -> None:
        self._names = f',"path":{json.dumps(path)},"pattern":{json.dumps(pattern)},"seen":'

    def render(self, key: FileKey, fp: Fingerprint, offset: int, seen: str, mark: str, mark_len: int) -> str:
        """The fingerprint and ``mark`` are hex digests (or empty), which JSON holds as they are; ``seen`` is
        the save's time as JSON holds it (``repr``), formatted once per save: a float's repr is a third of
        the cost of an entry."""
        return (f'{{"dev":{key.dev},"ino":{key.ino},"fingerprint":"{fp.digest}","fp_len":{fp.length},"offset":'
                f'{offset}{self._names}{seen},"gone_since":null,"mark":"{mark}","mark_len":{mark_len}}}')


Check = Callable[[object], str | None]
"""Why a field's value is unusable, or None."""


def _natural(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "is not an integer"
    return "is negative" if value < 0 else None


def _text(value: object) -> str | None:
    return None if isinstance(value, str) else "is not a string"


def _time(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "is not a number"
    return None if math.isfinite(value) else "is not finite"


def _time_or_none(value: object) -> str | None:
    return None if value is None else _time(value)


_BY_TYPE: dict[str, Check] = {
    "int": _natural,
    "str": _text,
    "float": _time,
    "float | None": _time_or_none,
}
"""How a field of each annotated type is checked; every :class:`Entry` field's type must be here."""


def _bounded(check: Check, test: Callable[[Any], bool], why: str) -> Check:
    def checked(value: object) -> str | None:
        return check(value) or (None if test(value) else why)

    return checked


_BY_NAME: dict[str, Check] = {
    "fp_len": _bounded(_natural, lambda n: n <= FP_BYTES, f"is over {FP_BYTES}"),
    "mark_len": _bounded(_natural, lambda n: n <= MARK_BYTES, f"is over {MARK_BYTES}"),
    "path": _bounded(_text, bool, "is empty"),
}


def entry_problem(raw: object) -> str | None:
    """Why ``raw`` (one item of the file's ``files`` list) is not a usable :class:`Entry`, or None.

    Unknown keys are ignored, so that a newer sidecar's additions do not cost an older one its state.
    """
    if not isinstance(raw, dict):
        return "is not an object"
    for field in fields(Entry):
        if field.name not in raw:
            if field.default is MISSING:
                return f"has no {field.name}"
            continue
        check = _BY_NAME.get(field.name) or _BY_TYPE[str(field.type)]
        problem = check(raw[field.name])
        if problem is not None:
            shown = json.dumps(raw[field.name])
            return f"{field.name} {problem} ({shown if len(shown) <= 60 else shown[:57] + '...'})"
    return None


def _entry(raw: dict[str, Any]) -> Entry:
    return Entry(**{field.name: raw[field.name] for field in fields(Entry) if field.name in raw})


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a state file held: the usable entries, and one line per entry that was dropped."""

    entries: list[Entry]
    dropped: list[str]


class CheckpointStore:
    """Reads and atomically replaces ``<directory>/sidecar-state.json``; see the module docstring.

    :meth:`save` may run in a worker thread while the event loop goes on: saves are serialised by a lock
    (they share the spare descriptor), and nothing else of the store changes after :meth:`prepare`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.lock_path = directory / LOCK_FILE
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._spares: list[int] = []
        """Descriptors held in reserve: closed to make room for the state file when the process is out of
        them. Two, because the event loop (an ``accept``, a file it opens) can take a freed slot first."""
        self._saving = threading.Lock()

    def prepare(self) -> None:
        """Create the directory, lock it for this process and prove it writable, so a bad volume or a
        second sidecar fails at start, not an hour in. Stale temp files of a crashed run are removed."""
        if self._lock_fd is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            lock_fd = self._lock(dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        self._dir_fd, self._lock_fd = dir_fd, lock_fd
        self._top_up_spares(dir_fd)
        with contextlib.suppress(OSError):
            for name in os.listdir(dir_fd):
                if name.startswith(f".{STATE_FILE}.") and name.endswith(_TMP_SUFFIX):
                    os.unlink(name, dir_fd=dir_fd)

    def _lock(self, dir_fd: int) -> int:
        """Take the directory's lock and write who holds it; name the holder when another process does."""
        try:
            lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock_fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(lock_fd)
            raise CheckpointError(
                f"checkpoint dir {self.directory} is in use: {self.lock_path} is locked by {holder}; "
                "run one sidecar per checkpoint directory (give each its own --checkpoint-dir / "
                "SIDECAR_CHECKPOINT_DIR)"
            ) from None
        except OSError as exc:  # a filesystem without locks (some NFS setups): go on, but say so
            log.warning("checkpoint_dir_unlocked", path=str(self.lock_path), error=exc.strerror,
                        hint="make sure only one sidecar uses this checkpoint directory")
        try:
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            probe = f".{STATE_FILE}.probe"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=dir_fd))
            os.unlink(probe, dir_fd=dir_fd)
        except OSError as exc:
            os.close(lock_fd)
            raise self._unwritable(exc) from exc
        return lock_fd

    def _unwritable(self, exc: OSError) -> CheckpointError:
        return CheckpointError(
            f"checkpoint dir {self.directory} is not writable ({exc.strerror}): "
            "mount a writable volume there or set --checkpoint-dir / SIDECAR_CHECKPOINT_DIR"
        )

    def close(self) -> None:
        """Let go of the directory and its lock (the end of the process does the same)."""
        with self._saving:
            for fd in (*self._spares, self._dir_fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._spares = []
            self._dir_fd = self._lock_fd = None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self, on_dropped: Callable[[str], None] | None = None) -> list[Entry]:
        """The saved entries (each dropped one reported on stderr, and to ``on_dropped`` for a metric); no
        file means no entries.

        A file we cannot understand as a whole raises CheckpointError (the caller moves it aside).
        """
        loaded = self.read()
        for problem in loaded.dropped:
            log.warning("checkpoint_entry_dropped", problem=problem,
                        hint="the file of that entry is treated as new; the other entries are kept")
            if on_dropped is not None:
                on_dropped(problem)
        return loaded.entries

    def read(self) -> Loaded:
        """Like :meth:`load`, but returning the dropped entries' descriptions instead of logging them."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded([], [])
        except OSError as exc:
            raise CheckpointError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} sidecar state file")
            items = doc["files"]
            if not isinstance(items, list):
                raise ValueError("files is not a list")
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"state file {self.path} is corrupt or foreign ({exc})") from exc
        entries, dropped = [], []
        for index, item in enumerate(items):
            problem = entry_problem(item)
            if problem is None:
                entries.append(_entry(item))
            else:
                dropped.append(f"state file {self.path}: entry {index} dropped: {problem}")
        return Loaded(entries, dropped)

    def quarantine(self) -> Path:
        """Move an unreadable state file aside (kept for inspection) so the sidecar can start afresh."""
        aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        os.replace(self.path, aside)
        return aside

    def save(self, entries: Iterable[Entry | str]) -> None:
        """Replace the state file atomically and durably, or raise CheckpointError and keep the old one.

        An entry may come already rendered (:class:`EntryText`)."""
        texts = [e if isinstance(e, str) else json.dumps(e.as_json(), separators=(",", ":")) for e in entries]
        data = _pieces(json.dumps({"version": VERSION, "written_at": time.time()}, separators=(",", ":")), texts)
        tmp = f".{STATE_FILE}.{os.getpid()}{_TMP_SUFFIX}"
        with self._saving:
            try:
                dir_fd = self._dir_fd if self._dir_fd is not None else os.open(
                    self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise self._save_failed(exc) from exc
            try:
                self._write_tmp(tmp, data, dir_fd)
                os.replace(tmp, STATE_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.fsync(dir_fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise self._save_failed(exc) from exc
            finally:
                if dir_fd != self._dir_fd:
                    os.close(dir_fd)

    def _save_failed(self, exc: OSError) -> CheckpointError:
        return CheckpointError(f"cannot write state file {self.path}: {exc.strerror}; the previous one is kept")

    def _write_tmp(self, name: str, data: Iterable[bytes], dir_fd: int) -> None:
        """Write ``data`` to a new file ``name``, all of it, synced and read back; OSError when it cannot."""
        fd, was_spare = self._open_new(name, dir_fd)
        try:
            crc, size = 0, 0
            for piece in data:
                view = memoryview(piece)
                while view:
                    written = os.write(fd, view)
                    if written == 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[written:]
                crc = zlib.crc32(piece, crc)
                size += len(piece)
            os.fsync(fd)
            if not _reads_back(fd, size, crc):
                raise OSError(errno.EIO, "the written file reads back different")
        finally:
            if was_spare and self._dir_fd is not None:
                os.dup2(self._dir_fd, fd, inheritable=False)  # closes the file, keeping its slot as a spare
                self._spares.append(fd)
            else:
                os.close(fd)
            if self._dir_fd is not None:
                self._top_up_spares(self._dir_fd)

    def _open_new(self, name: str, dir_fd: int) -> tuple[int, bool]:
        """Open ``name`` for writing; out of descriptors, give up spares for it. True when a spare's slot
        was used (the caller keeps that slot as a spare again)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        used_spare = False
        while True:
            try:
                return os.open(name, flags, 0o644, dir_fd=dir_fd), used_spare
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS or not self._spares:
                    raise
            os.close(self._spares.pop())
            used_spare = True

    def _top_up_spares(self, dir_fd: int) -> None:
        while len(self._spares) < _SPARES:
            try:
                self._spares.append(os.dup(dir_fd))
            except OSError:
                return


def _pieces(head: str, texts: list[str]) -> Iterator[bytes]:
    """The state file's bytes, :data:`_ENTRIES_PER_PIECE` entries at a time: thousands of files are never
    held as one string and one bytes object besides their entries (blocks that big stay in the heap)."""
    yield head[:-1].encode() + b',"files":['
    for at in range(0, len(texts), _ENTRIES_PER_PIECE):
        yield (b"," if at else b"") + ",".join(texts[at : at + _ENTRIES_PER_PIECE]).encode()
    yield b"]}"


def _reads_back(fd: int, size: int, crc: int) -> bool:
    """Whether the file on ``fd`` is ``size`` bytes with this CRC-32, read a piece at a time: a short or
    garbled write is what this catches, and a CRC does that at a fifth of a cryptographic hash's cost
    (0.2 against 1 ms for the 780 KB of 3,000 files' entries, twice per write)."""
    check = 0
    for at in range(0, size, _READ_BACK_BYTES):
        check = zlib.crc32(os.pread(fd, min(_READ_BACK_BYTES, size - at), at), check)
    return check == crc and os.pread(fd, 1, size) == b""
