"""``sidecar status``: where the sidecar is in each file it knows, read from the state file.

Meant for ``kubectl exec POD -c sidecar -- sidecar status`` during an incident: the container already
has ``SIDECAR_CHECKPOINT_DIR`` set, and the question is "which file is behind, and by how much". The
lag compares the saved offset with the file's size now; a file counts as found only when its device,
inode and head fingerprint all match, so a reused inode or a recreated file is never mistaken for it.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from sidecar.core.checkpoint import CheckpointStore, Entry, Loaded
from sidecar.core.identity import FileKey, Fingerprint, read_head
from sidecar.errors import CheckpointError, SidecarError
from sidecar.options import option

COLUMNS = ("PATH", "DEV:INODE", "OFFSET", "SIZE", "LAG", "UPDATED")


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One tracked file as the state file remembers it and as the filesystem shows it now."""

    entry: Entry
    size: int | None
    """Current size of the same file (by identity), or None when it is gone."""

    @property
    def lag(self) -> int | None:
        return None if self.size is None else max(0, self.size - self.entry.offset)

    def as_json(self) -> dict[str, object]:
        e = self.entry
        return {
            "path": e.path,
            "pattern": e.pattern,
            "dev": e.dev,
            "ino": e.ino,
            "offset": e.offset,
            "size": self.size,
            "lag": self.lag,
            "gone": self.size is None,
            "seen": e.seen,
            "gone_since": e.gone_since,
        }


def _same_file(path: str, entry: Entry) -> os.stat_result | None:
    """``path``'s stat when it is the entry's file by dev, inode and fingerprint."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if FileKey.of(st) != FileKey(entry.dev, entry.ino):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return st  # the head cannot be read: dev and inode are the best evidence there is
    try:
        head = read_head(fd)
    finally:
        os.close(fd)
    return st if Fingerprint(entry.fingerprint, entry.fp_len).matches(head) else None


def locate(entry: Entry) -> os.stat_result | None:
    """The entry's file at its recorded path, or under another name its glob matches (after a rotation)."""
    candidates = [entry.path, *sorted(glob.glob(entry.pattern, recursive=True))]
    return next((st for path in candidates if (st := _same_file(path, entry)) is not None), None)


def file_statuses(entries: list[Entry]) -> list[FileStatus]:
    statuses = []
    for entry in entries:
        st = None if entry.gone_since is not None else locate(entry)
        statuses.append(FileStatus(entry, None if st is None else st.st_size))
    return statuses


def load_state(directory: Path) -> tuple[Path, float, Loaded]:
    """The state file's path, when it was last written, and what it holds; CheckpointError when unusable."""
    store = CheckpointStore(directory)
    try:
        written = store.path.stat().st_mtime
    except FileNotFoundError:
        raise CheckpointError(
            f"no state file at {store.path}: pass the sidecar's --checkpoint-dir (or set SIDECAR_CHECKPOINT_DIR)"
        ) from None
    except OSError as error:
        raise CheckpointError(f"cannot read state file {store.path}: {error.strerror}") from None
    return store.path, written, store.read()


def _ago(then: float, now: float) -> str:
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _when(then: float, now: float) -> str:
    stamp = datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_ago(then, now)})"


def render_table(state_file: Path, written: float, statuses: list[FileStatus], now: float) -> str:
    """A fixed-width table for people; numbers right-aligned so that lags line up."""
    rows = [
        (
            s.entry.path,
            f"{s.entry.dev}:{s.entry.ino}",
            str(s.entry.offset),
            "-" if s.size is None else str(s.size),
            "gone" if s.lag is None else str(s.lag),
            _when(s.entry.seen, now),
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    right = {2, 3, 4}

    def line(cells: tuple[str, ...]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        padded = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in pairs]
        return "  ".join(padded).rstrip()

    title = f"{state_file}: {len(statuses)} file(s), written {_when(written, now)}"
    return "\n".join([title, line(COLUMNS), *(line(row) for row in rows)]) + "\n"


@click.command("status")
@option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The sidecar's checkpoint directory (holding sidecar-state.json).",
)
@option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.pass_context
def status_command(ctx: click.Context, checkpoint_dir: Path, as_json: bool) -> None:
    """Show every tracked file: offset, current size and lag, from the state file."""
    try:
        state_file, written, loaded = load_state(checkpoint_dir)
    except SidecarError as error:
        click.echo(f"sidecar status: {error}", err=True)
        ctx.exit(error.exit_code)
    for problem in loaded.dropped:
        click.echo(f"sidecar status: {problem} (the sidecar drops it too)", err=True)
    statuses = file_statuses(loaded.entries)
    if as_json:
        doc = {"state_file": str(state_file), "written_at": written, "files": [s.as_json() for s in statuses]}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render_table(state_file, written, statuses, time.time()), nl=False)
