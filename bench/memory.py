"""Resident memory of ``sidecar stream``: it must stay bounded, whatever the files look like.

Four loads, each next to GNU ``tail -F`` under the same load: idle on one file (the baseline), 300
files appended round robin, lines of 5 MiB with ``--max-line-bytes 1MiB``, and a 100 MB backlog
behind a reader that stalls for a while (the files are the buffer: no reading ahead). The peak is
``VmHWM`` from ``/proc``, taken before the follower is stopped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import writer
from bench.followers import BenchError, Drain, Follower, log_tail, sidecar_missing, sidecar_stream, start, stop, tail
from bench.procfs import memory_kib
from bench.report import Figure, Outcome, note, show
from bench.workload import REPO, fresh_dir, quick_main, scratch_dir, write_backlog

NAME = "memory"
SIDECAR = "sidecar stream"
MIB = 1024 * 1024
_DELIVERY_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Memory:
    delivered: int
    rss_kib: int
    hwm_kib: int


@dataclass(frozen=True, slots=True)
class Load:
    """A scenario: files to prepare, what to pass to each follower, and how the data arrives.

    ``feed`` runs while the follower runs; then the follower must deliver every byte of ``files``
    (loads run once per follower, so appended files grow from one follower to the next).
    """

    name: str
    files: list[Path]
    feed: Callable[[], object]
    sidecar_args: tuple[str, ...] = ()
    stall: float = 0.0
    goal: str = ""


def measure(follower: Follower, load: Load, log: Path) -> Memory:
    """Run the follower under the load until it delivered everything; its memory just before stopping."""
    proc = start(follower, log)
    drain = Drain(proc)
    try:
        if not load.stall:
            drain.start()
        load.feed()
        expected = sum(path.stat().st_size for path in load.files)
        if load.stall:
            time.sleep(load.stall)
            drain.start()
        if not drain.wait_for(expected, _DELIVERY_TIMEOUT):
            raise BenchError(f"{follower.name}: delivered {drain.nbytes} of {expected} bytes: {log_tail(log)}")
        rss, hwm = memory_kib(proc.pid)
    finally:
        stop(proc)
        if drain.is_alive():
            drain.join()
    return Memory(drain.nbytes, rss, hwm)


def _prefill(files: list[Path], initial: bytes) -> None:
    for path in files:
        path.write_bytes(initial)


def _append(files: list[Path], rate: int, seconds: float) -> Callable[[], object]:
    """A feed that runs a paced writer over ``files`` (each starting with one line) and waits for it."""
    _prefill(files, b"first line\n")
    return lambda: subprocess.run(writer.command(files, rate, seconds), cwd=REPO, capture_output=True, check=True)


def _write_long_lines(path: Path, lines: int, line_bytes: int) -> None:
    line = b"L" * (line_bytes - 1) + b"\n"
    with path.open("wb") as out:
        for _ in range(lines):
            out.write(line)


def _nothing() -> None:
    """The feed of a load whose data is all there before the follower starts."""


def loads(work: Path, quick: bool) -> list[Load]:
    idle = work / "idle" / "app.log"
    many = [work / "many" / f"app-{i:03d}.log" for i in range(300)]
    long = work / "long" / "app.log"
    backlog = work / "backlog" / "app.log"
    for directory in ("idle", "many", "long", "backlog"):
        (work / directory).mkdir()
    seconds = 2.0 if quick else 6.0
    backlog_lines = 100_000 if quick else 1_000_000
    _prefill([idle], b"one line\n")
    _write_long_lines(long, 4 if quick else 20, 5 * MIB)
    backlog_bytes = write_backlog(backlog, backlog_lines)
    return [
        Load("idle, 1 file", [idle], _nothing),
        Load(
            f"300 files, 20k lines/s for {seconds:g} s", many, _append(many, 20_000, seconds), goal="goal <= 40 MiB, "
        ),
        Load("5 MiB lines, --max-line-bytes 1MiB", [long], _nothing, ("--max-line-bytes", "1MiB")),
        Load(f"{backlog_bytes / 1e6:.0f} MB backlog, reader stalled 2 s", [backlog], _nothing, stall=2.0),
    ]


def run(quick: bool) -> Outcome:
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring tail -F only")
    rows = []
    figures = []
    measured: list[dict[str, object]] = []
    idle_kib = 0
    with scratch_dir("memory") as work:
        for index, load in enumerate(loads(work, quick)):
            results: dict[str, Memory] = {}
            followers = [tail(load.files)]
            if not missing:
                glob = load.files[0].parent / "*.log"
                followers.append(sidecar_stream(glob, fresh_dir(work, "checkpoints-"), *load.sidecar_args))
            for follower in followers:
                note(f"{NAME}: {follower.name}, {load.name}")
                result = measure(follower, load, work / f"{index}.stderr")
                results[follower.name] = result
                measured.append({"load": load.name, "follower": follower.name, "rss_kib": result.rss_kib,
                                 "peak_kib": result.hwm_kib})
                rows.append(
                    [
                        load.name,
                        follower.name,
                        f"{result.delivered / 1e6:,.1f}",
                        f"{result.rss_kib / 1024:.1f}",
                        f"{result.hwm_kib / 1024:.1f}",
                    ]
                )
            if SIDECAR in results:
                ours, theirs = results[SIDECAR], results["tail -F"]
                idle_kib = idle_kib or ours.hwm_kib
                figures.append(
                    Figure(
                        NAME,
                        f"peak RSS MiB, {load.name}",
                        f"{ours.hwm_kib / 1024:.1f}",
                        f"{load.goal}{(ours.hwm_kib - idle_kib) / 1024:+.1f} over idle; "
                        f"tail -F {theirs.hwm_kib / 1024:.1f}",
                    )
                )
    show(
        f"{NAME}: resident memory (MiB) after delivering everything (appended files grow per follower)",
        ["load", "follower", "MB out", "VmRSS", "VmHWM (peak)"],
        rows,
    )
    if missing:
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)], {"rows": measured})
    return Outcome(figures, {"rows": measured})


def main() -> None:
    quick_main(run, __doc__, "shorter loads")


if __name__ == "__main__":
    main()
