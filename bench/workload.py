"""What the benchmarks feed the followers: backlog files and the line formats, on tmpfs.

Data lives on ``/dev/shm`` so that the disk is never what is measured (the field notes did the same),
and every directory is removed when its benchmark ends, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")

LINE_BYTES = 103
"""Every generated line is 102 characters and a newline, like the field notes' backlog."""

_BACKLOG_LINE = b"2025-11-23T14:45:00.123456Z INFO  web-7d9f4c GET /api/v1/items status=200 dur_ms=12 id=%07d pad="
_BACKLOG_LINE += b"x" * (LINE_BYTES - 1 - len(_BACKLOG_LINE % 0)) + b"\n"
_BLOCK_LINES = 20_000

STAMP_DIGITS = 20
"""A stamped line starts with the writer's ``CLOCK_MONOTONIC`` time in ns, zero-padded to this width."""
_STAMPED_LINE = b"%020d seq=%09d "
_STAMPED_LINE += b"y" * (LINE_BYTES - 1 - len(_STAMPED_LINE % (0, 0))) + b"\n"


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A fresh directory on tmpfs (falling back to the system temp dir), removed afterwards."""
    root = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=f"sidecar-bench-{name}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, empty directory under ``parent``: each sidecar run needs its own checkpoint directory,
    or it would resume where the previous run stopped and deliver nothing."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``finally`` blocks stop followers and remove scratch data."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))


def quick_main(run: Callable[[bool], object], description: str | None, quick_help: str) -> None:
    """The command line of a bench module whose only option is ``--quick``."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    run(parser.parse_args().quick)


def write_backlog(path: Path, lines: int) -> int:
    """Write ``lines`` numbered lines of :data:`LINE_BYTES` each; returns the file size."""
    with path.open("wb") as out:
        for start in range(0, lines, _BLOCK_LINES):
            stop = min(start + _BLOCK_LINES, lines)
            out.write(b"".join([backlog_line(i) for i in range(start, stop)]))
    return lines * LINE_BYTES


def backlog_line(number: int) -> bytes:
    """Line ``number`` of a :func:`write_backlog` file: ASCII, :data:`LINE_BYTES` long with its newline."""
    return _BACKLOG_LINE % number


def stamped_line(now_ns: int, seq: int) -> bytes:
    """A line that carries the time it was written, so the reader can compute the delay."""
    return _STAMPED_LINE % (now_ns, seq)


def line_stamp(line: bytes | memoryview) -> int:
    """The write time (ns) a :func:`stamped_line` carries."""
    return int(bytes(line[:STAMP_DIGITS]))
