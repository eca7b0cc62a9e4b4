"""``sidecar agent`` shipping a backlog over Forward with acks: lines/s, CPU per million lines, peak RSS.

Without Fluent Bit the receiver is ``bench/forward_sink.py``, a Python process that only counts and acks
(its own CPU is printed, so a run where it is the ceiling shows as such), and our figures stand alone:
a ratio to Fluent Bit comes only from a run in which both ship the same backlog to the same real
receiver. With ``FLUENT_BIT`` naming a Fluent Bit binary, that run happens: ``sidecar agent`` and Fluent
Bit's own ``in_tail`` -> ``out_forward`` with acks take turns (the order swapped every run), each into a
fresh Fluent Bit ``in_forward`` (see :mod:`bench.fluent_bit` for how both are set up).

Each sender starts on an empty directory and settles; then the backlog is moved in. Its CPU is counted
from there (so neither start-up nor read-ahead before the first record arrives is left out), its time
from the moment it opened the backlog (``/proc/<pid>/fd``; so Fluent Bit's scan interval is not held
against it) until the receiver counted every line. The run counts only if the receiver got every line
and the sender's own metrics say every line was acknowledged; lines received beyond those are reported as
duplicates, and what the sender says it sent again as resent. Both senders run with their last, partial
chunk of the backlog waiting for their flush timer (ours ``--flush-interval`` 1 s by default, Fluent Bit's
``Flush``): that wait is in the time.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench import fluent_bit, forward_sink
from bench.followers import BenchError, log_tail, sidecar, sidecar_missing, stop
from bench.procfs import cpu_seconds, memory_kib
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.scrape_load import free_port
from bench.workload import REPO, exit_on_sigterm, fresh_dir, scratch_dir, write_backlog

NAME = "agent_throughput"
SIDECAR = "sidecar agent"
FLUENT_BIT = "Fluent Bit in_tail -> out_forward, acks"
_TIMEOUT = 600.0
_POLL = 0.01
_SETTLE = 0.5
_SETTLED_CPU = 0.005
"""A sender is idle once it used less CPU than this (s) in :data:`_SETTLE` s."""
_ACKED = re.compile(rb"^sidecar_records_(acked|retried)_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


class Receiver(Protocol):
    port: int
    proc: subprocess.Popen[bytes]

    def records(self) -> int:
        """Records taken in (and acked) so far; never blocks."""
        ...

    def final(self, deadline: float) -> int:
        """Records received in all, once the sender has stopped and the count holds still."""
        ...


@dataclass(frozen=True, slots=True)
class Sender:
    """A shipper: its command line given (watched glob, receiver port, metrics port), and how it reports
    ``(records acknowledged, records sent again)`` on that metrics port (``None`` while it is not answering)."""

    name: str
    argv: Callable[[Path, int, int], Sequence[str]]
    delivered: Callable[[int], tuple[int, int] | None]


def _agent_argv(work: Path, extra: Sequence[str], glob: Path, port: int, metrics_port: int) -> tuple[str, ...]:
    args = [str(glob), "--checkpoint-dir", str(fresh_dir(work, "checkpoints-")), "--metrics-port", str(metrics_port)]
    args += ["--metrics-address", "127.0.0.1", "--fluentd-host", "127.0.0.1", "--fluentd-port", str(port), *extra]
    return sidecar("agent", args).argv


def _agent_delivered(metrics_port: int) -> tuple[int, int] | None:
    body = fluent_bit.scrape(metrics_port, "/metrics")
    if body is None:
        return None
    totals = {"acked": 0.0, "retried": 0.0}
    for kind, value in _ACKED.findall(body):
        totals[kind.decode()] += float(value)
    return int(totals["acked"]), int(totals["retried"])


def ours(work: Path, extra: Sequence[str]) -> Sender:
    return Sender(SIDECAR, functools.partial(_agent_argv, work, extra), _agent_delivered)


def theirs(binary: str, work: Path) -> Sender:
    return Sender(FLUENT_BIT, functools.partial(fluent_bit.sender_argv, binary, work), fluent_bit.sender_delivered)


@dataclass(frozen=True, slots=True)
class Shipment:
    """One sender shipping the backlog (see the module docstring for what is timed and charged)."""

    lines: int
    seconds: float
    cpu: float
    peak_rss_kib: int
    receiver_cpu: float
    duplicates: int
    resent: int

    @property
    def lines_per_s(self) -> float:
        return self.lines / max(self.seconds, 1e-9)

    @property
    def cpu_per_million(self) -> float:
        return self.cpu / (self.lines / 1e6)


class _Watch:
    """A running sender and the checks of it the bench waits on; every wait fails fast if it died."""

    def __init__(self, proc: subprocess.Popen[bytes], sender: Sender, metrics_port: int, log: Path) -> None:
        self.proc, self._sender, self._metrics_port, self._log = proc, sender, metrics_port, log

    def alive(self, waiting_for: str, deadline: float) -> None:
        if self.proc.poll() is not None:
            status = self.proc.returncode
            raise BenchError(f"{self._sender.name} exited ({status}) {waiting_for}: {log_tail(self._log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{self._sender.name}: {waiting_for} at the deadline: {log_tail(self._log)}")
        time.sleep(_POLL)

    def settled(self, deadline: float) -> float:
        """Wait until its metrics answer and it idles; its CPU seconds then."""
        while self._sender.delivered(self._metrics_port) is None:
            self.alive("before its metrics answered", deadline)
        before = cpu_seconds(self.proc.pid)
        while True:
            time.sleep(_SETTLE)
            now = cpu_seconds(self.proc.pid)
            if now - before < _SETTLED_CPU:
                return now
            before = now
            self.alive("still busy starting", deadline)

    def opened(self, path: Path, deadline: float) -> int:
        """``CLOCK_MONOTONIC`` ns when it first held ``path`` open."""
        fds = Path(f"/proc/{self.proc.pid}/fd")
        while True:
            for fd in fds.iterdir():
                try:
                    if os.readlink(fd) == str(path):
                        return time.monotonic_ns()
                except FileNotFoundError:
                    continue
            self.alive(f"never opened {path}", deadline)

    def acked(self, lines: int, deadline: float) -> int:
        """Wait until it says every line was acknowledged; the records it sent again."""
        while True:
            delivered = self._sender.delivered(self._metrics_port)
            if delivered is not None and delivered[0] >= lines:
                return delivered[1]
            self.alive(f"acknowledged {delivered and delivered[0]} of {lines:,} lines", deadline)


def ship(sender: Sender, receiver: Receiver, backlog: Path, lines: int, work: Path) -> Shipment:
    """``sender`` ships ``backlog`` into ``receiver`` (stopped afterwards); a line missing fails the run."""
    deadline = time.monotonic() + _TIMEOUT
    watched = fresh_dir(work, "watched-")
    target = watched / backlog.name
    metrics_port = free_port()
    log = work / "sender.stderr"
    try:
        with log.open("ab") as err:
            argv = sender.argv(watched / "*.log", receiver.port, metrics_port)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        watch = _Watch(proc, sender, metrics_port, log)
        try:
            idle_cpu = watch.settled(deadline)
            backlog.rename(target)
            opened_ns = watch.opened(target, deadline)
            while receiver.records() < lines:
                watch.alive(f"receiver has {receiver.records():,} of {lines:,} lines", deadline)
            done_ns = time.monotonic_ns()
            resent = watch.acked(lines, deadline)
            cpu = cpu_seconds(proc.pid) - idle_cpu
            peak = memory_kib(proc.pid)[1]
        finally:
            stop(proc)
            if target.exists():
                target.rename(backlog)
        received = receiver.final(deadline)
        receiver_cpu = cpu_seconds(receiver.proc.pid)
    finally:
        stop(receiver.proc)
    if received < lines:
        raise BenchError(f"{sender.name}: the receiver got {received:,} of {lines:,} lines")
    return Shipment(lines, (done_ns - opened_ns) / 1e9, cpu, peak, receiver_cpu, received - lines, resent)


def run(quick: bool, runs: int | None = None, extra: Sequence[str] = ()) -> Outcome:
    lines = 200_000 if quick else 4_000_000
    runs = runs or (1 if quick else 3)
    missing = sidecar_missing("agent")
    if missing:
        note(f"{NAME}: {missing}")
        return Outcome([Figure(NAME, SIDECAR, "not run", missing)])
    binary = fluent_bit.binary()
    results: dict[str, list[Shipment]] = {SIDECAR: []} if binary is None else {SIDECAR: [], FLUENT_BIT: []}
    with scratch_dir("agent") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, lines)
        senders = [ours(work, extra)] + ([] if binary is None else [theirs(binary, work)])
        for index in range(runs):
            note(f"{NAME}: run {index + 1}/{runs}, {lines:,} lines, {' then '.join(s.name for s in senders)}")
            for sender in senders:
                receiver: Receiver = forward_sink.Sink(work) if binary is None else fluent_bit.Receiver(binary, work)
                results[sender.name].append(ship(sender, receiver, backlog, lines, work))
            senders.reverse()
    receiver_name = "a Fluent Bit in_forward receiver" if binary else "forward_sink.py (a Python count-and-ack sink)"
    medians = {name: _medians(shipments) for name, shipments in results.items()}
    show(
        f"{NAME}: {lines:,} lines ({nbytes / 1e6:,.0f} MB) with acks into {receiver_name}, median of {runs}",
        ["sender", "lines/s", "CPU s per M lines", "peak RSS MiB", "receiver CPU s", "duplicates", "resent"],
        [
            [name, f"{m['lines_per_s']:,.0f}", f"{m['cpu_per_million']:.2f}", f"{m['peak_mib']:.0f}",
             f"{m['receiver_cpu']:.2f}", f"{m['duplicates']:,.0f}", f"{m['resent']:,.0f}"]
            for name, m in medians.items()
        ],
    )
    show(
        f"{NAME}: every run{' (interleaved, the order swapped each run)' if binary else ''}",
        ["sender", "run", "lines/s", "CPU s per M lines", "peak RSS MiB"],
        [
            [name, str(index + 1), f"{s.lines_per_s:,.0f}", f"{s.cpu_per_million:.2f}", f"{s.peak_rss_kib / 1024:.0f}"]
            for name, shipments in results.items()
            for index, s in enumerate(shipments)
        ],
    )
    data: dict[str, object] = {"lines": lines, "receiver": receiver_name, "senders": medians}
    mine = medians[SIDECAR]
    other = medians.get(FLUENT_BIT)
    if other is None:
        note(f"{NAME}: {fluent_bit.ENV} is not set: our figures alone (no Fluent Bit to ship beside)")
    versus = {key: "" if other is None else f"{ratio(mine[key], other[key])} Fluent Bit, same receiver"
              for key in mine}
    return Outcome(
        [
            Figure(NAME, "lines/s", f"{mine['lines_per_s']:,.0f}", versus["lines_per_s"]),
            Figure(NAME, "CPU s per million lines", f"{mine['cpu_per_million']:.2f}", versus["cpu_per_million"]),
            Figure(NAME, "peak RSS MiB (sender)", f"{mine['peak_mib']:.0f}", versus["peak_mib"]),
        ],
        data,
    )


def _medians(shipments: list[Shipment]) -> dict[str, float]:
    return {
        "lines_per_s": median([s.lines_per_s for s in shipments]),
        "cpu_per_million": median([s.cpu_per_million for s in shipments]),
        "peak_mib": median([s.peak_rss_kib / 1024 for s in shipments]),
        "receiver_cpu": median([s.receiver_cpu for s in shipments]),
        "duplicates": median([float(s.duplicates) for s in shipments]),
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
