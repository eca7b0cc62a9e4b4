"""Catch-up on a backlog: ``cat``, GNU ``tail -n +1 -F`` and ``sidecar stream`` (raw and ``--format json``).

Each follower emits the same tmpfs backlog of 103-byte lines into a pipe drained by a C reader
(``head -c``) and by a Python reader; the sidecar is stopped with SIGTERM once the reader has every
byte. Into a pipe the reader is the ceiling, so the question is whether the sidecar keeps pace with
``tail -F`` at less CPU per GB. Median of the runs, interleaved so that drift hits all alike. MB/s and
CPU per GB are counted in bytes of the log read, so the JSON rows (whose output is larger) compare as
lines per second.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.followers import READERS, CatchUp, Follower, Reader, cat, catch_up, sidecar_missing, sidecar_stream, tail
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.workload import LINE_BYTES, backlog_line, fresh_dir, quick_main, scratch_dir, write_backlog

NAME = "stream_throughput"
SIDECAR = "sidecar stream"
SIDECAR_JSON = "sidecar stream --format json"
REFERENCES = ("tail -F", "cat")


@dataclass(frozen=True, slots=True)
class Plan:
    """How big and how often: the backlog, runs of the raw followers, and runs of the JSON one (slower)."""

    lines: int
    runs: int
    json_runs: int


def plan(quick: bool) -> Plan:
    """~400 MB, median of 5 (JSON: 3); a ~40 MB single run for a smoke test."""
    return Plan(400_000, 1, 1) if quick else Plan(400_000_000 // LINE_BYTES, 5, 3)


@dataclass(frozen=True, slots=True)
class Contender:
    """A follower, how many bytes it writes for the backlog, and how many runs it gets."""

    make: Callable[[], Follower]
    out_bytes: int
    runs: int


def json_out_bytes(path: Path, lines: int) -> int:
    """What ``--format json`` writes for the backlog: every backlog line is ASCII with nothing to escape,
    so each object has the same length."""
    record = {"file": str(path), "log": backlog_line(0).rstrip(b"\n").decode()}
    return lines * (len(json.dumps(record, separators=(",", ":"))) + 1)


def measure(contenders: dict[str, Contender], nbytes: int, work: Path) -> dict[tuple[str, Reader], list[CatchUp]]:
    """Every follower with every reader, interleaved run by run; figures in bytes of the log read."""
    results: dict[tuple[str, Reader], list[CatchUp]] = {}
    for run in range(max(c.runs for c in contenders.values())):
        for reader in READERS:
            for name, contender in contenders.items():
                if run >= contender.runs:
                    continue
                note(f"{NAME}: run {run + 1}/{contender.runs} {name} -> {reader} reader")
                log = work / f"{name.replace(' ', '-')}.stderr"
                done = catch_up(contender.make(), contender.out_bytes, reader, log)
                results.setdefault((name, reader), []).append(dataclasses.replace(done, nbytes=nbytes))
    return results


def run(quick: bool) -> Outcome:
    sizes = plan(quick)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}; measuring cat and tail -F only")
    with scratch_dir("throughput") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, sizes.lines)
        contenders = {
            "cat": Contender(lambda: cat(backlog), nbytes, sizes.runs),
            "tail -F": Contender(lambda: tail([backlog]), nbytes, sizes.runs),
        }
        if not missing:
            contenders[SIDECAR] = Contender(
                lambda: sidecar_stream(backlog, fresh_dir(work, "checkpoints-")), nbytes, sizes.runs
            )
            contenders[SIDECAR_JSON] = Contender(
                lambda: sidecar_stream(backlog, fresh_dir(work, "checkpoints-"), "--format", "json"),
                json_out_bytes(backlog, sizes.lines),
                sizes.json_runs,
            )
        results = measure(contenders, nbytes, work)

    rows = []
    medians: dict[tuple[str, Reader], tuple[float, float]] = {}
    for (name, reader), catch_ups in results.items():
        mbps = median([c.mb_per_s for c in catch_ups])
        per_gb = median([c.cpu_per_gb for c in catch_ups])
        medians[(name, reader)] = (mbps, per_gb)
        spread = f"{min(c.mb_per_s for c in catch_ups):,.0f}-{max(c.mb_per_s for c in catch_ups):,.0f}"
        rows.append(
            [
                name,
                reader,
                f"{mbps:,.0f}",
                spread,
                f"{median([c.startup for c in catch_ups]):.3f}",
                f"{per_gb:.3f}",
                f"{len(catch_ups)}",
            ]
        )
    title = f"{NAME}: {nbytes / 1e6:,.0f} MB backlog ({sizes.lines:,} lines) into a pipe, medians"
    show(title, ["follower", "reader", "MB/s", "MB/s range", "startup s", "CPU s/GB", "runs"], rows)
    data: dict[str, object] = {
        "backlog_bytes": nbytes,
        "lines": sizes.lines,
        "rows": [
            {"follower": name, "reader": reader, "mb_per_s": mbps, "cpu_s_per_gb": per_gb, "runs": len(catch_ups)}
            for (name, reader), catch_ups in results.items()
            for mbps, per_gb in [medians[(name, reader)]]
        ],
    }
    if missing:
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)], data)
    return Outcome(_ratios(medians), data)


def _ratios(medians: dict[tuple[str, Reader], tuple[float, float]]) -> list[Figure]:
    rows = []
    figures = []
    for ours in (SIDECAR, SIDECAR_JSON):
        for reader in READERS:
            ours_mbps, ours_cpu = medians[(ours, reader)]
            pace = [ratio(ours_mbps, medians[(ref, reader)][0]) for ref in REFERENCES]
            cost = [ratio(ours_cpu, medians[(ref, reader)][1]) for ref in REFERENCES]
            rows.append([ours, reader, *pace, *cost])
            versus = ", ".join(f"{p} {ref}" for p, ref in zip(pace, REFERENCES, strict=True))
            figures.append(Figure(NAME, f"MB/s, {ours.removeprefix(SIDECAR).strip() or 'raw'}, {reader} reader",
                                  f"{ours_mbps:,.0f}", versus))
            versus = ", ".join(f"{c} {ref}" for c, ref in zip(cost, REFERENCES, strict=True))
            figures.append(Figure(NAME, f"CPU s/GB, {ours.removeprefix(SIDECAR).strip() or 'raw'}, {reader} reader",
                                  f"{ours_cpu:.3f}", versus))
    show(
        f"{NAME}: ratios (sidecar / other; pace higher is better, CPU lower is better; goal >= 1.2x tail's pace "
        "at <= 0.6x its CPU)",
        ["sidecar", "reader", "pace vs tail", "pace vs cat", "CPU/GB vs tail", "CPU/GB vs cat"],
        rows,
    )
    return figures


def main() -> None:
    quick_main(run, __doc__, "~40 MB once instead of ~400 MB five times")


if __name__ == "__main__":
    main()
