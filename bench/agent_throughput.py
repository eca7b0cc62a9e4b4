"""``sidecar agent`` shipping a backlog over Forward with acks: lines/s, CPU per million lines, peak RSS.

Without Fluent Bit the receiver is ``bench/forward_sink.py``, a Python process that only counts and acks
(its own CPU is printed, so a run where it is the ceiling shows as such), and our figures stand alone:
a ratio to Fluent Bit comes only from a run in which both ship the same backlog to the same real
receiver. With ``FLUENT_BIT`` naming a Fluent Bit binary, that run happens: a Fluent Bit ``in_forward``
receives from ``sidecar agent`` and from Fluent Bit's own ``in_tail`` -> ``out_forward`` with acks, in
turn, each into a fresh receiver (see :mod:`bench.fluent_bit`).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import fluent_bit, forward_sink
from bench.followers import BenchError, LineReader, log_tail, sidecar, sidecar_missing, stop
from bench.procfs import cpu_seconds, memory_kib
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.workload import REPO, exit_on_sigterm, fresh_dir, scratch_dir, write_backlog

NAME = "agent_throughput"
SIDECAR = "sidecar agent"
FLUENT_BIT = "Fluent Bit in_tail -> out_forward, acks"
_TIMEOUT = 600.0


class _Said:
    """What the receiver announces on stdout (see ``forward_sink``), one keyword line at a time."""

    def __init__(self, receiver: subprocess.Popen[bytes], log: Path) -> None:
        self._reader = LineReader(receiver, "receiver", log)
        self._pending: list[bytes] = []

    def expect(self, word: str, deadline: float) -> list[str]:
        """The fields after ``word`` on the next line starting with it."""
        while True:
            while self._pending:
                fields = self._pending.pop(0).decode().split()
                if fields and fields[0] == word:
                    return fields[1:]
            self._pending, _ = self._reader.next_lines(deadline, f"no {word} line")


@dataclass(frozen=True, slots=True)
class Shipment:
    """One sender shipping the backlog: timed from the first record at the receiver to the last."""

    lines: int
    steady: float
    cpu: float
    cpu_startup: float
    peak_rss_kib: int
    receiver_cpu: float = 0.0
    resent: int = 0
    all_acked: bool = True

    @property
    def lines_per_s(self) -> float:
        return self.lines / max(self.steady, 1e-9)

    @property
    def cpu_per_million(self) -> float:
        return (self.cpu - self.cpu_startup) / (self.lines / 1e6)


def _agent_argv(backlog: Path, work: Path, extra: Sequence[str], port: int | str) -> tuple[str, ...]:
    args = [str(backlog), "--checkpoint-dir", str(fresh_dir(work, "checkpoints-")), "--metrics-port", "0"]
    args += ["--fluentd-host", "127.0.0.1", "--fluentd-port", str(port), *extra]
    return sidecar("agent", args).argv


def ship_to_sink(backlog: Path, lines: int, work: Path, extra: Sequence[str]) -> Shipment:
    """``sidecar agent`` into ``forward_sink``, timed until the receiver counted every line."""
    deadline = time.monotonic() + _TIMEOUT
    receiver_log = work / "receiver.stderr"
    with receiver_log.open("ab") as err:
        receiver = subprocess.Popen(forward_sink.command(lines), cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    try:
        said = _Said(receiver, receiver_log)
        port = said.expect("PORT", deadline)[0]
        log = work / "agent.stderr"
        with log.open("ab") as err:
            argv = _agent_argv(backlog, work, extra, port)
            agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            first_ns = int(said.expect("FIRST", deadline)[0])
            cpu_first = cpu_seconds(agent.pid)
            done_ns = int(said.expect("DONE", deadline)[1])
            cpu_done = cpu_seconds(agent.pid)
            peak = memory_kib(agent.pid)[1]
        except BenchError as error:
            raise BenchError(f"{error}; agent: {log_tail(log)}") from None
        finally:
            stop(agent)
        receiver_cpu = cpu_seconds(receiver.pid)
        receiver.terminate()
        received, messages, acks = map(int, said.expect("TOTAL", deadline))
    finally:
        stop(receiver)
    return Shipment(lines, (done_ns - first_ns) / 1e9, cpu_done, cpu_first, peak, receiver_cpu, received - lines,
                    acks == messages)


def ship_to_fluent_bit(binary: str, argv: Callable[[int], Sequence[str]], lines: int, work: Path) -> Shipment:
    """A sender (``argv`` given the port) into a fresh Fluent Bit receiver, timed by the receiver's counter."""
    deadline = time.monotonic() + _TIMEOUT
    receiver = fluent_bit.Receiver(binary, work)
    try:
        log = work / "sender.stderr"
        with log.open("ab") as err:
            sender = subprocess.Popen(argv(receiver.port), stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        try:
            first_ns = receiver.wait_total(1, deadline)
            cpu_first = cpu_seconds(sender.pid)
            done_ns = receiver.wait_total(lines, deadline)
            cpu_done = cpu_seconds(sender.pid)
            peak = memory_kib(sender.pid)[1]
        except BenchError as error:
            raise BenchError(f"{error}; sender: {log_tail(log)}") from None
        finally:
            stop(sender)
        receiver_cpu = cpu_seconds(receiver.proc.pid)
    finally:
        stop(receiver.proc)
    return Shipment(lines, (done_ns - first_ns) / 1e9, cpu_done, cpu_first, peak, receiver_cpu, receiver.total - lines)


def run(quick: bool, runs: int | None = None, extra: Sequence[str] = ()) -> Outcome:
    lines = 200_000 if quick else 4_000_000
    runs = runs or (1 if quick else 3)
    missing = sidecar_missing("agent")
    if missing:
        note(f"{NAME}: {missing}")
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)])
    binary = fluent_bit.binary()
    results: dict[str, list[Shipment]] = {}
    with scratch_dir("agent") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, lines)
        for index in range(runs):
            into = " (each sender into Fluent Bit)" if binary else ""
            note(f"{NAME}: run {index + 1}/{runs}, {lines:,} lines{into}")
            if binary is None:
                results.setdefault(SIDECAR, []).append(ship_to_sink(backlog, lines, work, extra))
                continue
            senders: dict[str, Callable[[int], Sequence[str]]] = {
                SIDECAR: functools.partial(_agent_argv, backlog, work, extra),
                FLUENT_BIT: functools.partial(fluent_bit.sender_argv, binary, backlog, work),
            }
            for name, argv in senders.items():
                results.setdefault(name, []).append(ship_to_fluent_bit(binary, argv, lines, work))
    receiver = "a Fluent Bit in_forward receiver" if binary else "forward_sink.py (a Python count-and-ack receiver)"
    medians = {name: _medians(shipments) for name, shipments in results.items()}
    show(
        f"{NAME}: {lines:,} lines ({nbytes / 1e6:,.0f} MB) with acks into {receiver}, median of {runs}",
        ["sender", "lines/s", "CPU s per M lines", "peak RSS MiB", "receiver CPU s", "resent", "all acked"],
        [
            [name, f"{m['lines_per_s']:,.0f}", f"{m['cpu_per_million']:.2f}", f"{m['peak_mib']:.0f}",
             f"{m['receiver_cpu']:.2f}", f"{m['resent']:,.0f}", f"{all(s.all_acked for s in results[name])}"]
            for name, m in medians.items()
        ],
    )
    data: dict[str, object] = {"lines": lines, "receiver": receiver, "senders": medians}
    ours = medians[SIDECAR]
    if binary is None:
        note(f"{NAME}: {fluent_bit.ENV} is not set: our figures alone (no Fluent Bit to ship beside)")
    theirs = medians.get(FLUENT_BIT)
    versus = {key: "" if theirs is None else f"{ratio(ours[key], theirs[key])} Fluent Bit, same receiver"
              for key in ours}
    return Outcome(
        [
            Figure(NAME, "lines/s", f"{ours['lines_per_s']:,.0f}", versus["lines_per_s"]),
            Figure(NAME, "CPU s per million lines", f"{ours['cpu_per_million']:.2f}", versus["cpu_per_million"]),
            Figure(NAME, "peak RSS MiB (sender)", f"{ours['peak_mib']:.0f}", versus["peak_mib"]),
        ],
        data,
    )


def _medians(shipments: list[Shipment]) -> dict[str, float]:
    return {
        "lines_per_s": median([s.lines_per_s for s in shipments]),
        "cpu_per_million": median([s.cpu_per_million for s in shipments]),
        "peak_mib": median([s.peak_rss_kib / 1024 for s in shipments]),
        "receiver_cpu": median([s.receiver_cpu for s in shipments]),
        "resent": median([float(s.resent) for s in shipments]),
    }


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k lines instead of 4M")
    parser.add_argument("--runs", type=int, help="median of this many runs [default: 3, --quick 1]")
    parser.add_argument("agent_args", nargs="*", help="extra `sidecar agent` options (after --)")
    args = parser.parse_args()
    run(args.quick, args.runs, args.agent_args)


if __name__ == "__main__":
    main()
