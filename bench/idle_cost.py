"""What following many quiet files costs: N files of a few lines each, idle, then 1 line per second per file.

A sidecar sits beside an app all day, so its cost when little happens matters as much as its pace on a
backlog. For N = 100, 1,000 and 3,000 files, each follower (GNU ``tail -F`` and ``sidecar stream``, one
after the other on the same files) first delivers the files' lines, then its CPU share is taken while
nothing is written, then while a writer appends one line to every file once a second (all on the same
tick, as the issue's table was measured), and its peak RSS once it delivered all. A Python thread drains
the follower's pipe, as a reader would.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import writer
from bench.followers import BenchError, Drain, Follower, log_tail, sidecar_missing, sidecar_stream, start, stop, tail
from bench.procfs import cpu_seconds, memory_kib
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.workload import REPO, fresh_dir, quick_main, scratch_dir

NAME = "idle_cost"
SIDECAR = "sidecar stream"
COUNTS = (100, 1_000, 3_000)
_FIRST_LINES = b"".join(b"first lines of a quiet file, line %d\n" % i for i in range(3))
_START_TIMEOUT = 120.0
_SETTLE = 1.0
"""After the first delivery, a moment for start-up work (first checkpoint, a poll) to finish."""


@dataclass(frozen=True, slots=True)
class Cost:
    idle_percent: float
    active_percent: float
    peak_kib: int


def _cpu_percent(pid: int, began_cpu: float, began: float) -> float:
    return 100.0 * (cpu_seconds(pid) - began_cpu) / (time.monotonic() - began)


def measure(follower: Follower, files: list[Path], seconds: float, log: Path) -> Cost:
    """Deliver the files, stay idle ``seconds``, then take one line per second per file for ``seconds``."""
    proc = start(follower, log)
    drain = Drain(proc)
    drain.start()
    try:
        expected = sum(path.stat().st_size for path in files)
        if not drain.wait_for(expected, _START_TIMEOUT):
            raise BenchError(f"{follower.name}: delivered {drain.nbytes} of {expected} bytes: {log_tail(log)}")
        time.sleep(_SETTLE)
        began, began_cpu = time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(seconds)
        idle = _cpu_percent(proc.pid, began_cpu, began)
        began, began_cpu = time.monotonic(), cpu_seconds(proc.pid)
        subprocess.run(writer.command(files, 1, seconds, rounds=True), cwd=REPO, capture_output=True, check=True)
        active = _cpu_percent(proc.pid, began_cpu, began)
        expected = sum(path.stat().st_size for path in files)
        if not drain.wait_for(expected, _START_TIMEOUT):
            raise BenchError(f"{follower.name}: delivered {drain.nbytes} of {expected} bytes: {log_tail(log)}")
        peak = memory_kib(proc.pid)[1]
    finally:
        stop(proc)
        drain.join()
    return Cost(idle, active, peak)


def run(quick: bool) -> Outcome:
    counts, seconds, runs = (COUNTS[:2], 2.0, 1) if quick else (COUNTS, 5.0, 2)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring tail -F only")
    results: dict[tuple[str, int], list[Cost]] = {}
    with scratch_dir("idle") as work:
        for count in counts:
            directory = work / f"{count}"
            directory.mkdir()
            files = [directory / f"app-{i:04d}.log" for i in range(count)]
            for path in files:
                path.write_bytes(_FIRST_LINES)
            for index in range(runs):
                followers = [tail(files)]
                if not missing:
                    followers.append(sidecar_stream(directory / "*.log", fresh_dir(work, "checkpoints-")))
                for follower in followers:
                    note(f"{NAME}: run {index + 1}/{runs}, {follower.name}, {count:,} files")
                    cost = measure(follower, files, seconds, work / f"{count}.stderr")
                    results.setdefault((follower.name, count), []).append(cost)
    medians = {key: _median(costs) for key, costs in results.items()}
    names = ["tail -F"] if missing else [SIDECAR, "tail -F"]
    rows = []
    for count in counts:
        cells = [f"{count:,}"]
        for field in ("idle_percent", "active_percent"):
            cells.append(" / ".join(f"{getattr(medians[(name, count)], field):.2f} %" for name in names))
        cells.append(" / ".join(f"{medians[(name, count)].peak_kib / 1024:.0f}" for name in names))
        rows.append(cells)
    show(
        f"{NAME}: {' / '.join(names)}, same files, {seconds:g} s idle then {seconds:g} s at 1 line/s per file",
        ["files", "idle CPU", "CPU at 1 line/s/file", "peak RSS MiB"],
        rows,
    )
    data: dict[str, object] = {
        "seconds": seconds,
        "rows": [
            {"follower": name, "files": count, "idle_cpu_percent": c.idle_percent,
             "active_cpu_percent": c.active_percent, "peak_kib": c.peak_kib}
            for (name, count), c in medians.items()
        ],
    }
    if missing:
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)], data)
    figures = []
    for count in counts:
        ours, theirs = medians[(SIDECAR, count)], medians[("tail -F", count)]
        figures.append(
            Figure(
                NAME,
                f"{count:,} files: idle / 1 line/s/file CPU %, peak MiB",
                f"{ours.idle_percent:.2f} / {ours.active_percent:.2f}, {ours.peak_kib / 1024:.0f}",
                f"tail -F {theirs.idle_percent:.2f} / {theirs.active_percent:.2f}, {theirs.peak_kib / 1024:.0f}"
                + (" (goal at 3,000: <= 1 / 4 %, 40 MiB)" if count == COUNTS[-1] else "")
                + f"; active {ratio(ours.active_percent, theirs.active_percent)}",
            )
        )
    return Outcome(figures, data)


def _median(costs: list[Cost]) -> Cost:
    return Cost(
        median([c.idle_percent for c in costs]),
        median([c.active_percent for c in costs]),
        int(median([c.peak_kib for c in costs])),
    )


def main() -> None:
    quick_main(run, __doc__, "100 and 1,000 files, 2 s per phase")


if __name__ == "__main__":
    main()
