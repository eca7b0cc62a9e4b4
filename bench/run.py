"""Run the benchmarks (all, or those named) and print one summary of figures and ratios.

``python -m bench.run`` takes about three minutes on 2 cores; ``--quick`` is a ~30 s smoke run whose
figures mean little (small sizes, one run). A benchmark whose sidecar mode is not there yet reports
"not run" and the rest carry on; one that breaks is reported and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from bench import agent_throughput, memory, scrape_load, stream_latency, stream_throughput
from bench.followers import BenchError
from bench.report import Figure, show
from bench.workload import exit_on_sigterm

BENCHES: dict[str, Callable[[bool], list[Figure]]] = {
    stream_throughput.NAME: stream_throughput.run,
    stream_latency.NAME: stream_latency.run,
    memory.NAME: memory.run,
    agent_throughput.NAME: agent_throughput.run,
    scrape_load.NAME: scrape_load.run,
}


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHES], metavar="NAME", help=", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    args = parser.parse_args()
    began = time.monotonic()
    figures: list[Figure] = []
    failed = False
    for name in args.names or list(BENCHES):
        try:
            figures += BENCHES[name](args.quick)
        except BenchError as error:
            failed = True
            figures.append(Figure(name, "FAILED", "-", str(error)))
    show(
        f"summary{' (--quick: smoke run, figures not meaningful)' if args.quick else ''}, "
        f"{time.monotonic() - began:.0f} s",
        ["bench", "figure", "sidecar", "compared with"],
        [[f.bench, f.what, f.value, f.compare] for f in figures],
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
