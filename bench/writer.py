"""A paced application: appends stamped lines to files at a fixed rate, round robin, one write per line.

It runs as its own process (``python -m bench.writer``) so that writing never competes with the
bench's reader for the interpreter, just as a real app is a separate process from its sidecar. When
done it prints ``WROTE <lines> <bytes>`` so the bench knows how much the follower must deliver.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.workload import stamped_line

_MIN_SLEEP = 0.0002
"""Ahead of schedule by less than this, write now: shorter sleeps overshoot more than they save."""


def command(files: list[Path], rate: int, seconds: float) -> list[str]:
    """The argv that starts a writer (run it with ``cwd=REPO``)."""
    return [
        sys.executable,
        "-m",
        "bench.writer",
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        *map(str, files),
    ]


def write_paced(files: list[Path], rate: int, seconds: float) -> tuple[int, int]:
    """Append ``rate`` lines per second for ``seconds``; returns ``(lines, bytes)`` written."""
    fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for path in files]
    total = int(rate * seconds)
    written = 0
    start = time.monotonic()
    try:
        for seq in range(total):
            ahead = start + seq / rate - time.monotonic()
            if ahead > _MIN_SLEEP:
                time.sleep(ahead)
            written += os.write(fds[seq % len(fds)], stamped_line(time.monotonic_ns(), seq))
    finally:
        for fd in fds:
            os.close(fd)
    return total, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, required=True, help="lines per second, all files together")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    lines, nbytes = write_paced(args.files, args.rate, args.seconds)
    print(f"WROTE {lines} {nbytes}", flush=True)


if __name__ == "__main__":
    main()
