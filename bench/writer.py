"""A paced application: appends stamped lines to files at a fixed rate, round robin, one write per line.

With ``--rounds`` the rate is per file instead: every round writes one line to each file at once, as
many quiet apps that log on the same tick (a once-a-second heartbeat) would.

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


def command(files: list[Path], rate: int, seconds: float, rounds: bool = False) -> list[str]:
    """The argv that starts a writer (run it with ``cwd=REPO``)."""
    return [
        sys.executable,
        "-m",
        "bench.writer",
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        *(["--rounds"] if rounds else []),
        *map(str, files),
    ]


def write_paced(files: list[Path], rate: int, seconds: float, rounds: bool = False) -> tuple[int, int]:
    """Append ``rate`` lines per second (per file with ``rounds``) for ``seconds``; returns ``(lines, bytes)``."""
    fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for path in files]
    batch = len(fds) if rounds else 1
    total = int(rate * seconds) * batch
    written = 0
    start = time.monotonic()
    try:
        for seq in range(0, total, batch):
            ahead = start + seq / batch / rate - time.monotonic()
            if ahead > _MIN_SLEEP:
                time.sleep(ahead)
            for line in range(seq, seq + batch):
                written += os.write(fds[line % len(fds)], stamped_line(time.monotonic_ns(), line))
    finally:
        for fd in fds:
            os.close(fd)
    return total, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, required=True, help="lines per second, all files together")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rounds", action="store_true", help="--rate is per file: one line to each file per round")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    lines, nbytes = write_paced(args.files, args.rate, args.seconds, args.rounds)
    print(f"WROTE {lines} {nbytes}", flush=True)


if __name__ == "__main__":
    main()
