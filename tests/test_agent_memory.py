"""``sidecar agent`` keeps its memory bounded while the receiver takes nothing: the log files are the buffer.

A backlog far larger than the in-flight window is waiting and the application keeps writing, while the
receiver either never acknowledges or refuses connections. Reading must stop once ``--max-in-flight``
chunks and the open chunk are full, the lag must grow instead, nothing may be committed, and the peak
resident memory (``VmHWM``) must stay under the 60 MiB the issue allows. No timing is measured: the
test waits until reading has stopped, then checks where it stopped.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SidecarFactory, read_state
from tests.forward_receiver import ForwardReceiver
from tests.prom import free_port
from tests.writer import BackgroundWriter, LogWriter

MIB = 1024 * 1024
PEAK_LIMIT_KIB = 60 * 1024
# The defaults: 4 chunks in flight of at most 2 MiB of entries each, one open chunk, one 1 MiB read.
# Entries are larger than the lines they carry, so the lines read cannot exceed this.
READ_BOUND = (4 + 1) * 2 * MIB + MIB


@pytest.fixture(params=["never_acks", "refuses"])
def receiver(request: pytest.FixtureRequest) -> Iterator[ForwardReceiver]:
    """A receiver that reads every chunk and acknowledges none, or a port that refuses connections."""
    running = ForwardReceiver(ack_mode="never")
    running.start()
    if request.param == "refuses":
        running.stop()
    yield running
    running.stop()


def scrape(port: int) -> dict[str, float]:
    """Every sample on the sidecar's ``/metrics``, by name (each series the test reads has one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


def wait_until_reading_stops(port: int, quiet: float = 1.0, timeout: float = 12.0) -> dict[str, float]:
    """Poll until ``sidecar_bytes_read_total`` is non-zero and has not moved for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        samples = scrape(port)
        read = samples.get("sidecar_bytes_read_total", 0.0)
        if read != last:
            last, since = read, time.monotonic()
        elif read > 0 and time.monotonic() - since >= quiet:
            return samples
        time.sleep(0.1)
    raise AssertionError(f"reading never stopped: {last:.0f} bytes read after {timeout}s")


def test_memory_stays_bounded_and_reading_stops_while_the_receiver_takes_nothing(
    sidecar: SidecarFactory, log_dir: Path, checkpoint_dir: Path, receiver: ForwardReceiver
) -> None:
    writer = LogWriter(log_dir / "app.log")
    writer.write(200_000)  # ~22 MiB: twice what the window can hold
    port = free_port()
    proc = sidecar(
        str(log_dir / "*.log"),
        *("--fluentd-host", "127.0.0.1", "--fluentd-port", str(receiver.port)),
        *("--metrics-port", str(port), "--metrics-address", "127.0.0.1"),
        mode="agent",
    )
    app = BackgroundWriter(writer, interval=0.001, per_write=10)  # the app keeps writing, ~10k lines/s
    app.start()
    try:
        stopped = wait_until_reading_stops(port)
        time.sleep(1.0)
        later = scrape(port)
    finally:
        app.stop()
    assert 0 < stopped["sidecar_bytes_read_total"] <= READ_BOUND
    assert later["sidecar_bytes_read_total"] == stopped["sidecar_bytes_read_total"]
    assert later["sidecar_lag_bytes"] > stopped["sidecar_lag_bytes"] > 20 * MIB
    assert later["sidecar_lines_delivered_total"] == 0
    assert all(entry["offset"] == 0 for entry in read_state(checkpoint_dir))
    assert len(receiver.messages) <= 4  # what --max-in-flight allows, each received once
    peak = peak_rss_kib(proc.proc.pid)
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.1f} MiB"
    proc.kill()  # a SIGTERM would wait out the drain grace for a receiver that takes nothing
