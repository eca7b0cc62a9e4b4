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
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.workload import REPO, fresh_dir, line_stamp, quick_main, scratch_dir, stamped_line

NAME = "stream_latency"
SIDECAR = "sidecar stream"
_STARTUP_TIMEOUT = 60.0


_RUNS = 3
"""Runs per follower and rate, interleaved: p50, p99 and CPU are medians of the runs (one run stalled by
a neighbour on the shared machine does not move them); the delays are also pooled for the picture."""

_QUANTILES = [i / 200 for i in range(200)] + [0.995, 0.999, 1.0]
"""Where the delay distribution is sampled for the JSON file and the picture (finer in the tail)."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Write-to-read delays of the pooled runs, in ms, and the follower's CPU share while following."""

    delays_ms: list[float]
    cpu_percents: list[float]
    p50s: list[float]
    p99s: list[float]

    def add(self, delays: list[float], cpu_percent: float) -> None:
        delays.sort()
        self.delays_ms.extend(delays)
        self.cpu_percents.append(cpu_percent)
        self.p50s.append(_quantile(delays, 0.5))
        self.p99s.append(_quantile(delays, 0.99))

    @property
    def lines(self) -> int:
        return len(self.delays_ms)

    def quantile(self, fraction: float) -> float:
        """Of the pooled delays (sorted once all runs are in)."""
        return _quantile(self.delays_ms, fraction)

    @property
    def p50(self) -> float:
        return median(self.p50s)

    @property
    def p99(self) -> float:
        return median(self.p99s)

    @property
    def cpu_percent(self) -> float:
        return median(self.cpu_percents)


def _quantile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


def _read_delays(reader: LineReader, delays_ns: list[int], lines: int, deadline: float) -> None:
    """Read until ``delays_ns`` holds ``lines`` delays: each line's arrival time minus its stamp."""
    while len(delays_ns) < lines:
        arrived, now = reader.next_lines(deadline, f"{len(delays_ns)} of {lines} lines")
        delays_ns.extend(now - line_stamp(line) for line in arrived)


def measure(follower: Follower, path: Path, rate: int, seconds: float, log: Path) -> tuple[list[float], float]:
    """One run: the follower on an empty file delivers a first line, then a paced writer runs.

    Returns the delays (ms) of the writer's lines and the follower's CPU % over the writer's run.
    """
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
    return [d / 1e6 for d in delays_ns[1:]], 100.0 * cpu / elapsed


def run(quick: bool) -> Outcome:
    seconds, runs = (1.0, 1) if quick else (3.0, _RUNS)
    rates = (1_000, 10_000)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring tail -F only")
    names = ["tail -F"] if missing else ["tail -F", SIDECAR]
    pooled: dict[tuple[str, int], Latency] = {(name, rate): Latency([], [], [], []) for rate in rates for name in names}
    with scratch_dir("latency") as work:
        for index in range(runs):
            for rate in rates:
                for name in names:
                    note(f"{NAME}: run {index + 1}/{runs}, {name} at {rate:,} lines/s for {seconds:g} s")
                    path = work / f"{index}-{rate}-{name.replace(' ', '-')}.log"
                    path.touch()
                    follower = (
                        tail([path]) if name == "tail -F" else sidecar_stream(path, fresh_dir(work, "checkpoints-"))
                    )
                    delays, cpu = measure(follower, path, rate, seconds, work / f"{rate}.stderr")
                    pooled[(name, rate)].add(delays, cpu)
    for result in pooled.values():
        result.delays_ms.sort()
    rows = [
        [name, f"{rate:,}", f"{r.lines:,}", f"{r.p50:.3f}", f"{r.p99:.3f}", f"{max(r.p99s):.3f}",
         f"{r.quantile(1.0):.3f}", f"{r.cpu_percent:.1f}"]
        for (name, rate), r in pooled.items()
    ]
    show(
        f"{NAME}: write -> read delay, {runs} x {seconds:g} s per follower and rate (medians of the runs)",
        ["follower", "lines/s", "lines", "p50 ms", "p99 ms", "worst run's p99", "max ms", "CPU %"],
        rows,
    )
    data: dict[str, object] = {
        "runs": runs,
        "seconds": seconds,
        "rows": [
            {
                "follower": name,
                "rate": rate,
                "lines": r.lines,
                "p50_ms": r.p50,
                "p99_ms": r.p99,
                "p99_ms_per_run": r.p99s,
                "max_ms": r.quantile(1.0),
                "cpu_percent": r.cpu_percent,
                "quantiles": [[q, r.quantile(q)] for q in _QUANTILES],
            }
            for (name, rate), r in pooled.items()
        ],
    }
    if missing:
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)], data)
    figures = []
    for rate in rates:
        ours, theirs = pooled[(SIDECAR, rate)], pooled[("tail -F", rate)]
        figures.append(
            Figure(
                NAME,
                f"p50 / p99 ms at {rate:,} lines/s",
                f"{ours.p50:.2f} / {ours.p99:.2f}",
                f"tail -F {theirs.p50:.2f} / {theirs.p99:.2f} (goal: p99 <= 1 ms)",
            )
        )
        figures.append(
            Figure(
                NAME,
                f"CPU % at {rate:,} lines/s",
                f"{ours.cpu_percent:.1f}",
                f"{ratio(ours.cpu_percent, theirs.cpu_percent)} tail -F ({theirs.cpu_percent:.1f}; goal <= 3x)",
            )
        )
    return Outcome(figures, data)


def main() -> None:
    quick_main(run, __doc__, "one run of 1 s per rate instead of three of 3 s")


if __name__ == "__main__":
    main()
