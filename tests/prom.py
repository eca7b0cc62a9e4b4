"""A real Prometheus server for tests: it scrapes a sidecar every second, and tests ask it PromQL.

Prometheus hands new targets to its scrapers only every 5 s, so a server per test, or a target added
per test, would cost that each time. Instead one server (module- or session-scoped) scrapes a fixed
loopback port chosen at start, :attr:`Prometheus.target_port`, and each test runs its sidecar on that
port. Series of earlier tests go stale when their sidecar stops; a test tells its own apart by a label
unique to it (the ``pattern``, which contains the test's tmp path).

``rule_files`` are loaded and evaluated every second, so a test can also check that alert rules
evaluate without error on real data (:meth:`Prometheus.rules`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
JOB = "log-sidecar"

Sample = dict[str, Any]
"""One element of an instant vector: ``{"metric": {labels}, "value": [time, "value"]}``."""


class QueryError(AssertionError):
    """Prometheus rejected a query (bad PromQL, or an error evaluating it)."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """A running ``prometheus`` child process and its HTTP API."""

    def __init__(self, port: int, target_port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.target_port = target_port
        self.proc = proc
        self.log = log

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                doc = json.load(response)
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                doc = json.loads(body)
            except ValueError:  # e.g. 503 "Service Unavailable" in plain text while still starting
                raise QueryError(f"{path} {params}: HTTP {error.code}: {body[:200]!r}") from None
        if doc.get("status") != "success":
            raise QueryError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str) -> list[Sample]:
        """Evaluate ``expr`` now; raises :class:`QueryError` if Prometheus refuses it."""
        data = self._api("/api/v1/query", {"query": expr})
        result: Any = data["result"]
        return result if data["resultType"] == "vector" else [{"metric": {}, "value": result}]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when the result is empty."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], what: str, timeout: float = 20.0
    ) -> float | None:
        """Poll ``expr`` until ``predicate(value)`` holds; fail naming ``what`` and the last value."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.value(expr)
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {expr} = {current}")
            time.sleep(0.1)

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its ``health`` and ``lastError`` after evaluation."""
        groups: list[dict[str, Any]] = self._api("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]


def _config(target_port: int, rule_files: Sequence[Path]) -> str:
    doc = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]},
        ],
    }
    return json.dumps(doc)  # JSON is YAML


@contextmanager
def running_prometheus(workdir: Path, rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    """Start Prometheus with storage and config in ``workdir``; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    target_port, port = free_port(), free_port()
    config = workdir / "prometheus.yml"
    config.write_text(_config(target_port, rule_files))
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port, target_port, proc, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: Prometheus, timeout: float = 20.0) -> None:
    """Until the target is known to the scrapers (about 5 s after start), so scrapes come every second."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({server.proc.returncode}):\n{server.log.read_text()}")
        try:
            if server.query(f'up{{job="{JOB}"}}'):
                return
        except (OSError, QueryError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus not scraping after {timeout}s:\n{server.log.read_text()}")
        time.sleep(0.1)
