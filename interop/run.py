"""``python -m interop.run`` (``make interop``): every scenario and probe against each receiver given.

Prints one line per receiver that is missing, then a table per receiver; exits 1 when a scenario lost
lines that the sidecar promised to deliver (a ``receiver limit`` row is a measurement, not a failure), 2
when no receiver was given. ``--quick`` runs the scenarios only (no probes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from interop import probes, scenarios
from interop.receivers import InteropError, Receiver, Tls, receivers_from_env
from tests.forward_receiver import make_tls_files


def _credentials(work: Path) -> scenarios.Credentials:
    files = make_tls_files(work / "tls")
    return scenarios.Credentials(ca=Path(files.ca), tls=Tls(Path(files.server_cert), Path(files.server_key)))


def _scenarios(receiver: Receiver, work: Path, creds: scenarios.Credentials, only: set[str]) -> bool:
    """Run the scenarios; print a row each; whether every promise held."""
    held = True
    print(f"  {'scenario':<22} {'sent':>7} {'received':>8} {'lost':>6} {'dups':>5} {'s':>5}  verdict / what")
    for scenario in scenarios.SCENARIOS:
        if only and scenario.name not in only:
            continue
        outcome = scenarios.run(receiver, scenario, work / receiver.name / scenario.name, creds)
        held &= outcome.verdict != "LOST"
        print(
            f"  {scenario.name:<22} {outcome.sent:>7} {outcome.received:>8} {outcome.lost:>6} "
            f"{outcome.duplicates:>5} {outcome.seconds:>5.1f}  {outcome.verdict}: {scenario.what}",
            flush=True,
        )
    return held


def _probes(receiver: Receiver) -> None:
    print(f"  {'probe (payload bytes per chunk)':<46} {'chunks':>6} {'sent':>7} {'kept':>7}  result")
    for index, probe in enumerate(probes.PROBES):
        result = probes.run(receiver, probe, index)
        lost = result.sent - result.received
        verdict = result.failure or ("all kept" if lost == 0 else f"{lost} lost ({lost / result.sent:.0%}), acked")
        print(
            f"  {probe.name:<46} {result.chunks:>6} {result.sent:>7} {result.received:>7}  {verdict}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scenarios only, no probes")
    parser.add_argument("--only", action="append", default=[], metavar="SCENARIO", help="run only these")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, output)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sidecar-interop-"))
    found, missing = receivers_from_env(work)
    for line in missing:
        print(f"interop: {line}", flush=True)
    if not found:
        print("interop: no receiver to run against; set FLUENT_BIT and/or FLUENTD", file=sys.stderr)
        return 2
    held = True
    try:
        creds = _credentials(work)
        for receiver in found:
            print(f"\n{receiver.name}: {receiver.version()}", flush=True)
            held &= _scenarios(receiver, work, creds, set(args.only))
            if not args.quick and not args.only:
                _probes(receiver)
    except InteropError as error:
        print(f"interop: {error} (work directory kept: {work})", file=sys.stderr)
        return 1
    if args.keep or not held:
        print(f"\ninterop: work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("\ninterop: " + ("every promise held" if held else "LINES LOST (see the rows marked LOST)"))
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
