"""Delay from an application's write to the follower's output, at 1k and 10k lines/s.

A separate writer process appends lines that carry their write time (``CLOCK_MONOTONIC`` ns, shared
by all processes on the machine); this process reads the follower's pipe and stamps each line on
arrival. ``tail -F`` (inotify) runs the same load for comparison; Fluent Bit flushes once per second
by default, so its delay is ~1 s.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import writer
from bench.followers import Follower, LineReader, sidecar_missing, sidecar_stream, start, stop, tail
from bench.procfs import cpu_seconds
from bench.report import Figure, note, ratio, show
from bench.workload import REPO, fresh_dir, line_stamp, quick_main, scratch_dir, stamped_line

NAME = "stream_latency"
SIDECAR = "sidecar stream"
_STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Latency:
    """Write-to-read delays of one run, in ms, and the follower's CPU share while following."""

    lines: int
    p50: float
    p99: float
    worst: float
    cpu_percent: float


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def _read_delays(reader: LineReader, delays_ns: list[int], lines: int, deadline: float) -> None:
    """Read until ``delays_ns`` holds ``lines`` delays: each line's arrival time minus its stamp."""
    while len(delays_ns) < lines:
        arrived, now = reader.next_lines(deadline, f"{len(delays_ns)} of {lines} lines")
        delays_ns.extend(now - line_stamp(line) for line in arrived)


def measure(follower: Follower, path: Path, rate: int, seconds: float, log: Path) -> Latency:
    """Start the follower on an empty file, wait until it delivers a first line, then run the writer."""
    proc = start(follower, log)
    try:
        reader = LineReader(proc, follower.name, log)
        delays_ns: list[int] = []
        with path.open("ab", buffering=0) as app:
            app.write(stamped_line(time.monotonic_ns(), 0))
        _read_delays(reader, delays_ns, 1, time.monotonic() + _STARTUP_TIMEOUT)
        cpu_before = cpu_seconds(proc.pid)
        began = time.monotonic()
        total = int(rate * seconds)
        with subprocess.Popen(writer.command([path], rate, seconds), cwd=REPO, stdout=subprocess.DEVNULL) as app:
            _read_delays(reader, delays_ns, 1 + total, began + seconds + 30.0)
            app.wait()
        cpu = cpu_seconds(proc.pid) - cpu_before
        elapsed = time.monotonic() - began
    finally:
        stop(proc)
    delays = sorted(d / 1e6 for d in delays_ns[1:])
    return Latency(total, _percentile(delays, 0.5), _percentile(delays, 0.99), delays[-1], 100.0 * cpu / elapsed)


def run(quick: bool) -> list[Figure]:
    seconds = 1.0 if quick else 5.0
    rates = (1_000, 10_000)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring tail -F only")
    results: dict[tuple[str, int], Latency] = {}
    with scratch_dir("latency") as work:
        for rate in rates:
            for name in ("tail -F", SIDECAR):
                if name == SIDECAR and missing:
                    continue
                note(f"{NAME}: {name} at {rate:,} lines/s for {seconds:g} s")
                path = work / f"{rate}-{name.replace(' ', '-')}.log"
                path.touch()
                follower = tail([path]) if name == "tail -F" else sidecar_stream(path, fresh_dir(work, "checkpoints-"))
                results[(name, rate)] = measure(follower, path, rate, seconds, work / f"{rate}.stderr")
    rows = [
        [name, f"{rate:,}", f"{r.lines:,}", f"{r.p50:.3f}", f"{r.p99:.3f}", f"{r.worst:.3f}", f"{r.cpu_percent:.1f}"]
        for (name, rate), r in results.items()
    ]
    show(
        f"{NAME}: write -> read delay, {seconds:g} s per rate",
        ["follower", "lines/s", "lines", "p50 ms", "p99 ms", "max ms", "CPU %"],
        rows,
    )
    show(
        "reference (field notes)",
        ["follower", "lines/s", "delay"],
        [["tail -F", "10,000", "p99 ~0.2 ms"], ["Fluent Bit (Flush 1)", "any", "~1 s"]],
    )
    if missing:
        return [Figure(NAME, SIDECAR, "not run", missing)]
    figures = []
    for rate in rates:
        ours, theirs = results[(SIDECAR, rate)], results[("tail -F", rate)]
        figures.append(
            Figure(
                NAME,
                f"p50 / p99 ms at {rate:,} lines/s",
                f"{ours.p50:.2f} / {ours.p99:.2f}",
                f"{ratio(ours.p50, theirs.p50)} / {ratio(ours.p99, theirs.p99)} tail -F",
            )
        )
        figures.append(
            Figure(
                NAME,
                f"CPU % at {rate:,} lines/s",
                f"{ours.cpu_percent:.1f}",
                f"{ratio(ours.cpu_percent, theirs.cpu_percent)} tail -F ({theirs.cpu_percent:.1f})",
            )
        )
    return figures


def main() -> None:
    quick_main(run, __doc__, "1 s per rate instead of 5 s")


if __name__ == "__main__":
    main()
