"""Lines and bytes read and delivered: plain integer adds on the hot path, the same counters on ``/metrics``.

The expected text below is what the four ``prometheus_client.Counter`` series exposed before they were
replaced by per-thread integers and a collector (issue 14); scrapers, dashboards and alert rules must
not see the difference.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import generate_latest

from sidecar.observe.metrics import Metrics

FLOW_NAMES = ("sidecar_lines_read", "sidecar_bytes_read", "sidecar_lines_delivered", "sidecar_bytes_delivered")

EXPOSED_BEFORE = """\
# HELP sidecar_lines_read_total Complete lines read from followed files.
# TYPE sidecar_lines_read_total counter
sidecar_lines_read_total{mode="agent",pattern="/a/*.log"} 2.0
sidecar_lines_read_total{mode="agent",pattern="/b/*.log"} 4.0
sidecar_lines_read_total{mode="agent",pattern="/c/*.log"} 0.0
# HELP sidecar_bytes_read_total Bytes of complete lines read from followed files.
# TYPE sidecar_bytes_read_total counter
sidecar_bytes_read_total{mode="agent",pattern="/a/*.log"} 200.0
sidecar_bytes_read_total{mode="agent",pattern="/b/*.log"} 1.099511628087e+12
sidecar_bytes_read_total{mode="agent",pattern="/c/*.log"} 0.0
# HELP sidecar_lines_delivered_total Lines delivered: written to stdout (stream) or acknowledged (agent).
# TYPE sidecar_lines_delivered_total counter
sidecar_lines_delivered_total{mode="agent",pattern="/a/*.log"} 2.0
sidecar_lines_delivered_total{mode="agent",pattern="/b/*.log"} 3.0
sidecar_lines_delivered_total{mode="agent",pattern="/c/*.log"} 0.0
# HELP sidecar_bytes_delivered_total Bytes of lines delivered: written (stream) or acknowledged (agent).
# TYPE sidecar_bytes_delivered_total counter
sidecar_bytes_delivered_total{mode="agent",pattern="/a/*.log"} 200.0
sidecar_bytes_delivered_total{mode="agent",pattern="/b/*.log"} 310.0
sidecar_bytes_delivered_total{mode="agent",pattern="/c/*.log"} 0.0
"""


def exposition(metrics: Metrics) -> list[str]:
    return generate_latest(metrics.registry).decode().splitlines()


def flow_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if any(name in line for name in FLOW_NAMES)]


def test_read_and_delivered_expose_the_text_the_prometheus_counters_did() -> None:
    """Names, help, labels, values (an int past 2**40 formatted as before), order, and a zero series for a
    pattern only opened (``/c``) or first seen by another event (``/a``, opened before it was read)."""
    metrics = Metrics("agent")
    metrics.file_opened("/a/*.log")
    metrics.read("/b/*.log", 3, 310)
    metrics.read("/a/*.log", 2, 200)
    metrics.read("/b/*.log", 1, 2**40 + 1)
    metrics.delivered("/a/*.log", 2, 200)
    metrics.delivered("/b/*.log", 3, 310)
    metrics.file_opened("/c/*.log")
    lines = exposition(metrics)
    assert "\n".join(flow_lines(lines)) + "\n" == EXPOSED_BEFORE
    first_sidecar = next(i for i, line in enumerate(lines) if "sidecar_" in line)
    assert lines[first_sidecar : first_sidecar + len(EXPOSED_BEFORE.splitlines())] == EXPOSED_BEFORE.splitlines()
    opened = [line for line in lines if line.startswith("sidecar_files_opened_total")]
    assert opened == [
        'sidecar_files_opened_total{mode="agent",pattern="/a/*.log"} 1.0',
        'sidecar_files_opened_total{mode="agent",pattern="/b/*.log"} 0.0',
        'sidecar_files_opened_total{mode="agent",pattern="/c/*.log"} 1.0',
    ]


def test_a_name_query_selects_the_flow_counters_like_any_other_series() -> None:
    """``/metrics?name[]=...`` uses ``restricted_registry``: it finds collectors by the names they describe."""
    metrics = Metrics("stream")
    metrics.delivered("/a/*.log", 5, 50)
    restricted = metrics.registry.restricted_registry(["sidecar_lines_delivered_total", "sidecar_files_opened_total"])
    samples = {line for line in generate_latest(restricted).decode().splitlines() if not line.startswith("#")}
    assert samples == {
        'sidecar_lines_delivered_total{mode="stream",pattern="/a/*.log"} 5.0',
        'sidecar_files_opened_total{mode="stream",pattern="/a/*.log"} 0.0',
    }


@contextmanager
def switching_often() -> Iterator[None]:
    """Make the interpreter hand the GIL over as often as it can, so a lost update would show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_delivered_and_read_from_two_threads_while_scraped_lose_no_count() -> None:
    """Agent acks and core reads may come from different threads; each ``+=`` must land, and a scrape
    meanwhile sees totals that only grow. Counts of threads that have ended stay in the totals."""
    metrics = Metrics("agent")
    pattern, calls = "/a/*.log", 50_000
    start = threading.Barrier(3)
    done = threading.Event()
    seen: list[float] = []

    def deliver() -> None:
        start.wait()
        for _ in range(calls):
            metrics.delivered(pattern, 1, 3)
            metrics.read(pattern, 2, 5)

    def scrape() -> None:
        start.wait()
        while not done.is_set():
            value = metrics.registry.get_sample_value(
                "sidecar_bytes_delivered_total", {"mode": "agent", "pattern": pattern}
            )
            seen.append(0.0 if value is None else value)

    with switching_often():
        workers = [threading.Thread(target=deliver) for _ in range(2)]
        scraper = threading.Thread(target=scrape)
        for thread in [*workers, scraper]:
            thread.start()
        for thread in workers:
            thread.join(timeout=120)
        done.set()
        scraper.join(timeout=120)
    assert not any(thread.is_alive() for thread in [*workers, scraper])
    labels = {"mode": "agent", "pattern": pattern}
    get = metrics.registry.get_sample_value
    assert get("sidecar_lines_delivered_total", labels) == 2 * calls
    assert get("sidecar_bytes_delivered_total", labels) == 2 * calls * 3
    assert get("sidecar_lines_read_total", labels) == 2 * calls * 2
    assert get("sidecar_bytes_read_total", labels) == 2 * calls * 5
    assert seen
    assert seen == sorted(seen)
