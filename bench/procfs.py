"""CPU time and memory of one process, read from ``/proc``.

Benchmarks charge a follower only for its own work, so they read its counters directly instead of
``getrusage(RUSAGE_CHILDREN)``, which would mix in the readers and receivers the bench also starts.
CPU comes from each thread's ``schedstat`` (nanoseconds on a CPU) rather than ``stat``'s 10 ms ticks,
which are too coarse for an idle follower or a 400 MB catch-up (``tail -F`` spends ~0.2 s on one). Both
stay readable while the process is an unreaped zombie, so the counters of a follower that exits on its own
(``cat``) are still there after it finishes. Threads that already exited are missing from ``schedstat``:
their time is only in ``stat``, so the larger of the two is taken.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process (all its threads) has used so far, to the nanosecond where the kernel says."""
    on_cpu_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu_ns += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return max(on_cpu_ns / 1e9, _stat_seconds(pid))


def _stat_seconds(pid: int) -> float:
    """User + system CPU seconds from ``/proc/<pid>/stat`` (clock ticks, all threads, exited ones too)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` in KiB: resident memory now and its peak so far; zeros once the process is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in values:
            values[fields[0]] = int(fields[1])
    return values["VmRSS:"], values["VmHWM:"]
