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
"""Runs per follower and rate, interleaved; their delays are pooled, their CPU shares give a median."""

_QUANTILES = [i / 200 for i in range(200)] + [0.995, 0.999, 1.0]
"""Where the delay distribution is sampled for the JSON file and the picture (finer in the tail)."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Write-to-read delays of the pooled runs, in ms, and the follower's CPU share while following."""

    delays_ms: list[float]
    cpu_percents: list[float]

    @property
    def lines(self) -> int:
        return len(self.delays_ms)

    def quantile(self, fraction: float) -> float:
        return self.delays_ms[min(len(self.delays_ms) - 1, int(fraction * len(self.delays_ms)))]

    @property
    def cpu_percent(self) -> float:
        return median(self.cpu_percents)


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
    pooled: dict[tuple[str, int], Latency] = {(name, rate): Latency([], []) for rate in rates for name in names}
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
                    pooled[(name, rate)].delays_ms.extend(delays)
                    pooled[(name, rate)].cpu_percents.append(cpu)
    for result in pooled.values():
        result.delays_ms.sort()
    rows = [
        [name, f"{rate:,}", f"{r.lines:,}", *(f"{r.quantile(q):.3f}" for q in (0.5, 0.99, 1.0)), f"{r.cpu_percent:.1f}"]
        for (name, rate), r in pooled.items()
    ]
    show(
        f"{NAME}: write -> read delay, {runs} x {seconds:g} s per follower and rate (delays pooled, CPU median)",
        ["follower", "lines/s", "lines", "p50 ms", "p99 ms", "max ms", "CPU %"],
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
                "p50_ms": r.quantile(0.5),
                "p99_ms": r.quantile(0.99),
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
                f"{ours.quantile(0.5):.2f} / {ours.quantile(0.99):.2f}",
                f"tail -F {theirs.quantile(0.5):.2f} / {theirs.quantile(0.99):.2f} (goal: p99 <= 1 ms)",
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
