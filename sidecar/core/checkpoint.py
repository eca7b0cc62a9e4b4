"""The state file: where each known file was left, written so that a crash never corrupts it.

One small versioned JSON file per checkpoint directory. It is replaced atomically (temp file, fsync,
rename, fsync of the directory), so a reader sees the old state or the new one, never half. Offsets
in it only ever point just past a line the sink has confirmed: that is the whole delivery guarantee.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import CheckpointError

STATE_FILE = "sidecar-state.json"
VERSION = 1


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


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise TypeError("entry is not an object")
    entry = Entry(**raw)
    for name in ("dev", "ino", "fp_len", "offset", "mark_len"):
        if not isinstance(getattr(entry, name), int):
            raise TypeError(f"{name} is not an integer")
    return entry


class CheckpointStore:
    """Reads and atomically replaces ``<directory>/sidecar-state.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE

    def prepare(self) -> None:
        """Create the directory and prove it is writable, so a bad volume fails at start, not an hour in."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".{STATE_FILE}.probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint dir {self.directory} is not writable ({exc.strerror}): "
                "mount a writable volume there or set --checkpoint-dir / SIDECAR_CHECKPOINT_DIR"
            ) from exc

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> list[Entry]:
        """The saved entries; no file means no entries. A file we cannot understand raises CheckpointError."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} sidecar state file")
            return [_entry(item) for item in doc["files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"state file {self.path} is corrupt or foreign ({exc})") from exc

    def quarantine(self) -> Path:
        """Move an unreadable state file aside (kept for inspection) so the sidecar can start afresh."""
        aside = self.path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
        os.replace(self.path, aside)
        return aside

    def save(self, entries: Iterable[Entry]) -> None:
        """Replace the state file atomically and durably."""
        doc = {"version": VERSION, "written_at": time.time(), "files": [asdict(e) for e in entries]}
        tmp = self.path.with_name(f".{STATE_FILE}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, json.dumps(doc, separators=(",", ":")).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise CheckpointError(f"cannot write state file {self.path}: {exc.strerror}") from exc
