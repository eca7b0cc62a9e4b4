"""Does scraping ``/metrics`` slow the pipeline? Stream catch-up with and without a 50 ms scraper.

Prometheus scrapes every 15-60 s; a scrape every 50 ms is a deliberate overload, so that any cost of
the metrics server to the follow loop (they share one process) shows up in the throughput. The
reader is ``head -c``, so the scraper thread in this process does not compete with a Python reader.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

from bench import stream_throughput
from bench.followers import CatchUp, catch_up, sidecar_missing, sidecar_stream
from bench.report import Figure, Outcome, median, note, ratio, show
from bench.workload import fresh_dir, quick_main, scratch_dir, write_backlog

NAME = "scrape_load"
INTERVAL = 0.05


class Scraper(threading.Thread):
    """GETs ``/metrics`` every :data:`INTERVAL` s; refusals before the first answer are start-up, not errors."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self._port = port
        self._done = threading.Event()
        self.seconds: list[float] = []
        self.errors = 0

    def run(self) -> None:
        while not self._done.is_set():
            began = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2.0)
                try:
                    conn.request("GET", "/metrics")
                    response = conn.getresponse()
                    response.read()
                finally:
                    conn.close()
                if response.status == 200:
                    self.seconds.append(time.monotonic() - began)
                else:
                    self.errors += 1
            except OSError:
                self.errors += bool(self.seconds)
            self._done.wait(max(0.0, INTERVAL - (time.monotonic() - began)))

    def finish(self) -> None:
        """Stop scraping and wait for the scrape in flight (idempotent)."""
        self._done.set()
        self.join()


def free_port() -> int:
    """A loopback port free right now (the sidecar binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(quick: bool) -> Outcome:
    sizes = stream_throughput.plan(quick)
    lines, runs = sizes.lines, min(sizes.runs, 3)
    missing = sidecar_missing("stream")
    if missing:
        note(f"{NAME}: {missing}")
        return Outcome([Figure(NAME, "sidecar stream", "not run", missing)])
    results: dict[bool, list[CatchUp]] = {False: [], True: []}
    scrapers: list[Scraper] = []
    with scratch_dir("scrape") as work:
        backlog = work / "app.log"
        nbytes = write_backlog(backlog, lines)
        for index in range(runs):
            for scraped in (False, True):
                note(f"{NAME}: run {index + 1}/{runs}, {'with' if scraped else 'without'} scraping")
                port = free_port()
                follower = sidecar_stream(backlog, fresh_dir(work, "checkpoints-"), metrics_port=port)
                log = work / "sidecar.stderr"
                if not scraped:
                    results[scraped].append(catch_up(follower, nbytes, "c", log))
                    continue
                scraper = Scraper(port)
                scraper.start()
                try:
                    results[scraped].append(catch_up(follower, nbytes, "c", log, before_stop=scraper.finish))
                finally:
                    scraper.finish()
                scrapers.append(scraper)
    durations = sorted(s for scraper in scrapers for s in scraper.seconds)
    errors = sum(scraper.errors for scraper in scrapers)
    rows = []
    for scraped, catch_ups in results.items():
        rows.append(
            [
                "every 50 ms" if scraped else "none",
                f"{median([c.mb_per_s for c in catch_ups]):,.0f}",
                f"{median([c.cpu_per_gb for c in catch_ups]):.2f}",
                f"{len(durations):,}" if scraped else "-",
                f"{durations[len(durations) // 2] * 1e3:.1f}" if scraped and durations else "-",
                f"{durations[-1] * 1e3:.1f}" if scraped and durations else "-",
                f"{errors}" if scraped else "-",
            ]
        )
    show(
        f"{NAME}: sidecar stream, {nbytes / 1e6:,.0f} MB into head -c, median of {runs}",
        ["scraping", "MB/s", "CPU s/GB", "scrapes", "scrape p50 ms", "scrape max ms", "errors"],
        rows,
    )
    quiet = median([c.mb_per_s for c in results[False]])
    busy = median([c.mb_per_s for c in results[True]])
    figure = Figure(
        NAME,
        "MB/s while scraped every 50 ms",
        f"{busy:,.0f}",
        f"{ratio(busy, quiet)} unscraped ({quiet:,.0f}); {len(durations)} scrapes, {errors} errors",
    )
    return Outcome([figure], {"mb_per_s_unscraped": quiet, "mb_per_s_scraped": busy, "scrapes": len(durations),
                              "errors": errors})


def main() -> None:
    quick_main(run, __doc__, "~40 MB once instead of ~400 MB three times")


if __name__ == "__main__":
    main()
