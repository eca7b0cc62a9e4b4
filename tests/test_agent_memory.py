"""``sidecar agent`` keeps its memory bounded while the receiver takes nothing: the log files are the buffer.

A backlog far larger than the in-flight window is waiting and the application keeps writing, while the
receiver either never acknowledges or refuses connections. Reading must stop once ``--max-in-flight``
chunks and the open chunk are full, the lag must grow instead, and the peak resident memory
(``VmHWM``) must stay under the 60 MiB the issue allows. No timing is measured: the test waits until
reading has stopped, then checks where it stopped. What differs between the two receivers is what
they prove besides: one that reads but never acks gets the window and nothing is committed; one that
refuses, once it comes back, gets the backlog and the checkpoint moves on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import (
    SidecarFactory,
    SidecarProcess,
    metric,
    peak_rss_kib,
    scrape,
    state_entry,
    wait_for_checkpoint,
)
from tests.forward_receiver import ForwardReceiver
from tests.prom import free_port
from tests.writer import BackgroundWriter, LogWriter

MIB = 1024 * 1024
PEAK_LIMIT_KIB = 60 * 1024
# The defaults: 4 chunks in flight of at most 2 MiB of entries each, one open chunk, one 1 MiB read.
# Entries are larger than the lines they carry, so the lines read cannot exceed this.
READ_BOUND = (4 + 1) * 2 * MIB + MIB


@dataclass(frozen=True)
class Stalled:
    """The sidecar once reading stopped, and its counters then and one second later."""

    proc: SidecarProcess
    port: int
    writer: LogWriter
    stopped: dict[str, float]
    later: dict[str, float]


def counters(port: int) -> dict[str, float]:
    samples = scrape(port)
    names = ("sidecar_bytes_read_total", "sidecar_lag_bytes", "sidecar_lines_delivered_total")
    return {name: metric(samples, name) for name in names}


def wait_until_reading_stops(port: int, quiet: float = 1.0, timeout: float = 12.0) -> dict[str, float]:
    """Poll until ``sidecar_bytes_read_total`` is non-zero and has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        samples = counters(port)
        read = samples["sidecar_bytes_read_total"]
        if read != last:
            last, since = read, time.monotonic()
        elif read > 0 and time.monotonic() - since >= quiet:
            return samples
        time.sleep(0.1)
    raise AssertionError(f"reading never stopped: {last:.0f} bytes read after {timeout}s")


@contextmanager
def stalled_agent(sidecar: SidecarFactory, log_dir: Path, receiver: ForwardReceiver) -> Iterator[Stalled]:
    """An agent with a ~22 MiB backlog and an app writing ~10k lines/s, once its reading has stopped."""
    writer = LogWriter(log_dir / "app.log")
    writer.write(200_000)  # ~22 MiB: twice what the window can hold
    port = free_port()
    proc = sidecar(
        str(log_dir / "*.log"),
        *("--fluentd-host", "127.0.0.1", "--fluentd-port", str(receiver.port)),
        *("--metrics-port", str(port), "--metrics-address", "127.0.0.1"),
        mode="agent",
    )
    app = BackgroundWriter(writer, interval=0.001, per_write=10)
    app.start()
    try:
        stopped = wait_until_reading_stops(port)
        time.sleep(1.0)
        later = counters(port)
    finally:
        app.stop()
    yield Stalled(proc, port, writer, stopped, later)
    proc.kill()  # a SIGTERM would wait out the drain grace for a receiver that takes nothing


def assert_paused_with_bounded_memory(stalled: Stalled) -> None:
    """Reading stopped within the window, stayed stopped while the lag grew, and memory stayed bounded."""
    stopped, later = stalled.stopped, stalled.later
    assert 0 < stopped["sidecar_bytes_read_total"] <= READ_BOUND
    assert later["sidecar_bytes_read_total"] == stopped["sidecar_bytes_read_total"]
    assert later["sidecar_lag_bytes"] > stopped["sidecar_lag_bytes"] > 20 * MIB
    peak = peak_rss_kib(stalled.proc.proc.pid)
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.1f} MiB"


def test_memory_stays_bounded_and_nothing_is_committed_while_the_receiver_never_acks(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path
) -> None:
    with ForwardReceiver(ack_mode="never") as receiver, stalled_agent(sidecar, log_dir, receiver) as stalled:
        assert_paused_with_bounded_memory(stalled)
        assert stalled.later["sidecar_lines_delivered_total"] == 0
        assert state_entry(checkpoint_dir, stalled.writer.path)["offset"] == 0
        assert 1 <= len(receiver.messages) <= 4  # what --max-in-flight allows, each received once


def test_memory_stays_bounded_while_the_receiver_refuses_and_the_backlog_flows_once_it_is_back(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path
) -> None:
    receiver = ForwardReceiver()
    receiver.start()
    receiver.stop()  # its port now refuses connections
    try:
        with stalled_agent(sidecar, log_dir, receiver) as stalled:
            assert_paused_with_bounded_memory(stalled)
            assert f"receiver=127.0.0.1:{receiver.port}" in stalled.proc.wait_stderr("receiver_down")
            receiver.start()
            receiver.wait_until(lambda r: len(r.events()) >= 100_000, timeout=30)
            wait_for_checkpoint(checkpoint_dir, stalled.writer.path, 1)
            assert metric(scrape(stalled.port), "sidecar_bytes_read_total") > READ_BOUND
    finally:
        receiver.stop()
