"""Run the benchmarks (all, or those named), print one summary of figures and ratios, and keep them.

``python -m bench.run`` takes about five minutes on 2 cores; ``--quick`` is a ~1 min smoke run whose
figures mean little (small sizes, one run). A benchmark whose sidecar mode is not there yet reports
"not run" and the rest carry on; one that breaks is reported and makes the exit status 1. The figures
go to ``bench/out/figures.json`` and the picture to ``bench/out/figures.png`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import agent_throughput, idle_cost, memory, plot, scenarios, scrape_load, stream_latency, stream_throughput
from bench.followers import BenchError
from bench.report import Figure, Outcome, note, show
from bench.workload import REPO, exit_on_sigterm

_SHOWN = 160
"""Characters of a failure's message in the summary table (the whole message goes to stderr)."""

BENCHES: dict[str, Callable[[bool], Outcome]] = {
    stream_throughput.NAME: stream_throughput.run,
    stream_latency.NAME: stream_latency.run,
    memory.NAME: memory.run,
    idle_cost.NAME: idle_cost.run,
    agent_throughput.NAME: agent_throughput.run,
    scrape_load.NAME: scrape_load.run,
    scenarios.NAME: scenarios.run,
}


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHES], metavar="NAME", help=", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="where figures.json and .png go")
    args = parser.parse_args()
    began = time.monotonic()
    figures: list[Figure] = []
    data: dict[str, object] = {}
    failed = False
    for name in args.names or list(BENCHES):
        try:
            outcome = BENCHES[name](args.quick)
        except BenchError as error:
            failed = True
            figures.append(Figure(name, "FAILED", "-", str(error)[:_SHOWN]))
            note(f"{name} FAILED: {error}")
            continue
        figures += outcome.figures
        data[name] = outcome.data
    show(
        f"summary{' (--quick: smoke run, figures not meaningful)' if args.quick else ''}, "
        f"{time.monotonic() - began:.0f} s",
        ["bench", "figure", "sidecar", "compared with"],
        [[f.bench, f.what, f.value, f.compare] for f in figures],
    )
    keep(args.out, args.quick, data, figures)
    return 1 if failed else 0


def keep(out: Path, quick: bool, data: dict[str, object], figures: list[Figure]) -> None:
    """Write the run's figures as JSON and draw its picture (when matplotlib, the ``bench`` extra, is there)."""
    out.mkdir(parents=True, exist_ok=True)
    everything = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": quick,
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "benches": data,
        "summary": [dataclasses.asdict(figure) for figure in figures],
    }
    json_file = out / "figures.json"
    json_file.write_text(json.dumps(everything, indent=1) + "\n")
    try:
        plot.draw(everything, out / "figures.png")
    except ImportError:
        note(f"figures in {json_file}; no picture: matplotlib is missing (pip install -e '.[bench]')")
        return
    note(f"figures in {json_file}, picture in {out / 'figures.png'}")


def machine() -> str:
    """What the figures ran on, in a few words: cores, CPU model, kernel, Python."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.machine(),
    )
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
