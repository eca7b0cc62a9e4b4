"""Catch-up on a backlog: ``cat``, GNU ``tail -n +1 -F`` and ``sidecar stream`` side by side.

Each follower emits the same tmpfs backlog of 103-byte lines into a pipe drained by a C reader
(``head -c``) and by a Python reader; the sidecar is stopped with SIGTERM once the reader has every
byte. Into a pipe the reader is the ceiling, so the question is whether the sidecar keeps pace with
``tail -F`` at no more CPU per GB. Median of the runs, interleaved so that drift hits all alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.followers import READERS, CatchUp, Follower, Reader, cat, catch_up, sidecar_missing, sidecar_stream, tail
from bench.report import Figure, median, note, ratio, show
from bench.workload import LINE_BYTES, fresh_dir, quick_main, scratch_dir, write_backlog

NAME = "stream_throughput"
SIDECAR = "sidecar stream"

REFERENCE = [
    ["cat", "python", "~700-1,300", "-"],
    ["cat", "c (head -c)", "~930", "-"],
    ["tail -F", "python", "~1,250", "~0.63"],
    ["tail -F", "c (head -c)", "~1,940", "-"],
    ["busybox tail -F", "c (head -c)", "~2,400", "-"],
    ["python os.splice loop", "python", "~1,200-1,500", "lower"],
]
"""Field notes, 1.2 GB backlog on this kind of machine (tail -F: ~0.75 CPU s for 1.2 GB)."""


def sizes(quick: bool) -> tuple[int, int]:
    """(lines, runs): ~400 MB and median of 3, or ~40 MB once for a smoke run."""
    return (400_000, 1) if quick else (400_000_000 // LINE_BYTES, 3)


def measure(
    makers: dict[str, Callable[[], Follower]], nbytes: int, runs: int, work: Path
) -> dict[tuple[str, Reader], list[CatchUp]]:
    """Every follower with every reader, ``runs`` times, interleaved."""
    results: dict[tuple[str, Reader], list[CatchUp]] = {}
    for run in range(runs):
        for reader in READERS:
            for name, make in makers.items():
                note(f"{NAME}: run {run + 1}/{runs} {name} -> {reader} reader")
                log = work / f"{name.replace(' ', '-')}.stderr"
                results.setdefault((name, reader), []).append(catch_up(make(), nbytes, reader, log))
    return results


def run(quick: bool) -> list[Figure]:
    lines, runs = sizes(quick)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring cat and tail -F only")
    with scratch_dir("throughput") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, lines)
        makers: dict[str, Callable[[], Follower]] = {
            "cat": lambda: cat(backlog),
            "tail -F": lambda: tail([backlog]),
        }
        if not missing:
            makers[SIDECAR] = lambda: sidecar_stream(backlog, fresh_dir(work, "checkpoints-"))
        results = measure(makers, nbytes, runs, work)

    rows = []
    medians: dict[tuple[str, Reader], tuple[float, float]] = {}
    for (name, reader), catch_ups in results.items():
        mbps = median([c.mb_per_s for c in catch_ups])
        per_gb = median([c.cpu_per_gb for c in catch_ups])
        medians[(name, reader)] = (mbps, per_gb)
        rows.append(
            [
                name,
                reader,
                f"{mbps:,.0f}",
                f"{median([c.wall for c in catch_ups]):.2f}",
                f"{median([c.startup for c in catch_ups]):.3f}",
                f"{median([c.cpu for c in catch_ups]):.2f}",
                f"{per_gb:.2f}",
            ]
        )
    title = f"{NAME}: {nbytes / 1e6:,.0f} MB backlog ({lines:,} lines), median of {runs}"
    show(title, ["follower", "reader", "MB/s", "wall s", "startup s", "CPU s", "CPU s/GB"], rows)
    show("reference (field notes, 1.2 GB on tmpfs)", ["follower", "reader", "MB/s", "CPU s/GB"], REFERENCE)
    if missing:
        return [Figure(NAME, SIDECAR, "not run", missing)]
    return _ratios(medians)


def _ratios(medians: dict[tuple[str, Reader], tuple[float, float]]) -> list[Figure]:
    rows = []
    figures = []
    for reader in READERS:
        ours_mbps, ours_cpu = medians[(SIDECAR, reader)]
        tail_mbps, tail_cpu = medians[("tail -F", reader)]
        cat_mbps, cat_cpu = medians[("cat", reader)]
        rows.append(
            [
                reader,
                ratio(ours_mbps, tail_mbps),
                ratio(ours_mbps, cat_mbps),
                ratio(ours_cpu, tail_cpu),
                ratio(ours_cpu, cat_cpu),
            ]
        )
        figures.append(
            Figure(
                NAME,
                f"MB/s, {reader} reader",
                f"{ours_mbps:,.0f}",
                f"{ratio(ours_mbps, tail_mbps)} tail -F, {ratio(ours_mbps, cat_mbps)} cat",
            )
        )
        figures.append(
            Figure(
                NAME,
                f"CPU s/GB, {reader} reader",
                f"{ours_cpu:.2f}",
                f"{ratio(ours_cpu, tail_cpu)} tail -F, {ratio(ours_cpu, cat_cpu)} cat",
            )
        )
    show(
        f"{NAME}: ratios (sidecar / other; MB/s higher is better, CPU lower is better)",
        ["reader", "MB/s vs tail", "MB/s vs cat", "CPU/GB vs tail", "CPU/GB vs cat"],
        rows,
    )
    return figures


def main() -> None:
    quick_main(run, __doc__, "~40 MB once instead of ~400 MB three times")


if __name__ == "__main__":
    main()
