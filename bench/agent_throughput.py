"""``sidecar agent`` shipping a backlog to a local Forward receiver with acks on.

Lines per second and CPU seconds per million lines, next to the field notes' Fluent Bit v4.2.8
figures (``in_tail`` -> ``out_forward`` -> Fluent Bit ``in_forward``). The receiver is
``bench/forward_sink.py``, a Python process that only counts and acks; its own CPU is printed too, so
a run where the receiver is the ceiling shows as such (the real Fluent Bit receiver capped the
reference pipeline near 450k lines/s).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import forward_sink
from bench.followers import BenchError, LineReader, log_tail, sidecar, sidecar_missing, start, stop
from bench.procfs import cpu_seconds, memory_kib
from bench.report import Figure, median, note, ratio, show
from bench.workload import REPO, exit_on_sigterm, fresh_dir, scratch_dir, write_backlog

NAME = "agent_throughput"
_TIMEOUT = 600.0

REFERENCE_LINES_PER_S = 456_000.0
REFERENCE_ACK_LINES_PER_S = (393_000.0, 456_000.0)
REFERENCE_ACK_CPU_PER_MILLION = (7.4 / 4, 8.3 / 4)
REFERENCE = [
    ["in_tail -> out_null, default buffers", "~454k", "~0.95", "~96"],
    ["in_tail -> out_forward, 1M buffers", "~456k", "~1.08", "~257"],
    ["same, require_ack_response, default buffers", "~456k", "~2.08", "~117"],
    ["same, require_ack_response, 1M buffers", "~393k", "~1.85", "~382"],
]
"""Field notes: Fluent Bit v4.2.8, 4,000,000 lines (412 MB) from the head, flush 1 s, median of 3."""


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
    lines: int
    wall: float
    startup: float
    steady: float
    cpu: float
    cpu_startup: float
    peak_rss_kib: int
    receiver_cpu: float
    received: int
    acks: int
    messages: int

    @property
    def lines_per_s(self) -> float:
        """From the first record at the receiver to the last, so interpreter start-up is not counted."""
        return self.lines / max(self.steady, 1e-9)

    @property
    def cpu_per_million(self) -> float:
        return (self.cpu - self.cpu_startup) / (self.lines / 1e6)


def ship(backlog: Path, lines: int, work: Path, extra: Sequence[str]) -> Shipment:
    """One run: receiver up, agent started, timed until the receiver counted every line."""
    deadline = time.monotonic() + _TIMEOUT
    receiver_log = work / "receiver.stderr"
    with receiver_log.open("ab") as err:
        receiver = subprocess.Popen(forward_sink.command(lines), cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    try:
        said = _Said(receiver, receiver_log)
        port = said.expect("PORT", deadline)[0]
        args = [str(backlog), "--checkpoint-dir", str(fresh_dir(work, "checkpoints-")), "--metrics-port", "0"]
        args += ["--fluentd-host", "127.0.0.1", "--fluentd-port", port, *extra]
        log = work / "agent.stderr"
        begin = time.monotonic()
        agent = start(sidecar("agent", args), log, stdout=subprocess.DEVNULL)
        try:
            first_ns = int(said.expect("FIRST", deadline)[0])
            cpu_first = cpu_seconds(agent.pid)
            done_ns = int(said.expect("DONE", deadline)[1])
            done = time.monotonic()
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
    return Shipment(
        lines,
        done - begin,
        first_ns / 1e9 - begin,
        (done_ns - first_ns) / 1e9,
        cpu_done,
        cpu_first,
        peak,
        receiver_cpu,
        received,
        acks,
        messages,
    )


def run(quick: bool, runs: int | None = None, extra: Sequence[str] = ()) -> list[Figure]:
    lines = 200_000 if quick else 4_000_000
    runs = runs or (1 if quick else 3)
    show(
        "reference (field notes): Fluent Bit v4.2.8, 4M lines; forward runs were bound by the receiving "
        "Fluent Bit in_forward near 450k lines/s",
        ["pipeline", "lines/s", "CPU s/M", "MiB"],
        REFERENCE,
    )
    missing = sidecar_missing("agent")
    if missing:
        note(f"{NAME}: {missing}")
        return [Figure(NAME, "sidecar agent", "not run", missing)]
    with scratch_dir("agent") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, lines)
        shipments = []
        for index in range(runs):
            note(f"{NAME}: run {index + 1}/{runs}, {lines:,} lines")
            shipments.append(ship(backlog, lines, work, extra))
    rows = [
        [
            f"{index + 1}",
            f"{s.lines_per_s:,.0f}",
            f"{s.wall:.2f}",
            f"{s.startup:.2f}",
            f"{s.cpu:.2f}",
            f"{s.cpu_per_million:.2f}",
            f"{s.peak_rss_kib / 1024:.0f}",
            f"{s.receiver_cpu:.2f}",
            f"{s.messages:,}",
            f"{s.acks:,}",
            f"{s.received - s.lines:,}",
        ]
        for index, s in enumerate(shipments)
    ]
    show(
        f"{NAME}: {lines:,} lines ({nbytes / 1e6:,.0f} MB) to a local ack-ing receiver (forward_sink.py)",
        [
            "run",
            "lines/s",
            "wall s",
            "startup s",
            "CPU s",
            "CPU s/M",
            "peak MiB",
            "recv CPU s",
            "msgs",
            "acks",
            "extra",
        ],
        rows,
    )
    rate = median([s.lines_per_s for s in shipments])
    per_million = median([s.cpu_per_million for s in shipments])
    peak = median([s.peak_rss_kib / 1024 for s in shipments])
    acked = all(s.acks == s.messages for s in shipments)
    low, high = REFERENCE_ACK_LINES_PER_S
    cpu_low, cpu_high = REFERENCE_ACK_CPU_PER_MILLION
    return [
        Figure(
            NAME,
            "lines/s" + ("" if acked else " (NOT all chunks asked for acks)"),
            f"{rate:,.0f}",
            f"{ratio(rate, high)}-{ratio(rate, low)} Fluent Bit with acks",
        ),
        Figure(
            NAME,
            "CPU s per million lines",
            f"{per_million:.2f}",
            f"{ratio(per_million, cpu_high)}-{ratio(per_million, cpu_low)} Fluent Bit with acks",
        ),
        Figure(NAME, "peak RSS MiB (sender)", f"{peak:.0f}", "Fluent Bit with acks ~117-382"),
        Figure(NAME, "receiver CPU s (Python)", f"{median([s.receiver_cpu for s in shipments]):.2f}", ""),
    ]


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
