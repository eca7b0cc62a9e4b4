"""A real Prometheus scrapes the sidecar's endpoint; the dashboard and alert rules are evaluated by it.

An exporter in a thread of this process stands in for the sidecar where the test is about the series
(every series populated, so each dashboard query must return data); ``test_stream_mode_*`` and
``test_agent_mode_*`` run the real CLI instead. The Prometheus server is the session's (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

from sidecar.observe.health import Health
from sidecar.observe.http import start_http
from sidecar.observe.metrics import Metrics
from tests.conftest import PROMETHEUS_RULES, SidecarFactory
from tests.forward_receiver import ForwardReceiver
from tests.prom import PROMTOOL, Prometheus

ROOT = Path(__file__).resolve().parent.parent
RULES = PROMETHEUS_RULES
PROMETHEUS_RULE = ROOT / "examples" / "prometheus" / "prometheusrule.yaml"
DASHBOARD = ROOT / "examples" / "grafana" / "sidecar-dashboard.json"
RECEIVER = "fluentd.logging:24224"
# What Grafana puts in place of the dashboard's variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "${datasource}": "prometheus"}


@contextmanager
def exporter(metrics: Metrics, port: int) -> Iterator[None]:
    """Serve ``metrics`` on ``port`` from an event loop in a thread, as the sidecar serves from its loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    health = Health()
    server = asyncio.run_coroutine_threadsafe(start_http("127.0.0.1", port, metrics.registry, health), loop).result(
        timeout=10
    )
    try:
        yield
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def populated(pattern: str) -> Metrics:
    """Metrics with every series present and moving, as a busy agent-mode sidecar has them."""
    metrics = Metrics("agent")
    metrics.files_watched(2)
    metrics.file_opened(pattern)
    metrics.file_closed(pattern)
    metrics.rotated(pattern, "rename")
    metrics.read(pattern, 10, 1000)
    metrics.delivered(pattern, 9, 900)
    metrics.long_line(pattern)
    metrics.unparsed(pattern)
    metrics.multiline_truncated(pattern)
    metrics.read_error(pattern, "EACCES")
    metrics.given_up(pattern, 10)
    metrics.backlog(100, 1.0)
    metrics.checkpoint_written(True)
    metrics.checkpoint_written(False)
    metrics.receiver_up(RECEIVER, True)
    metrics.chunk_sent(RECEIVER, 10)
    metrics.chunk_acked(RECEIVER, 10, 0.003)
    metrics.chunk_retried(RECEIVER, 10)
    metrics.chunk_failed(RECEIVER, 10)
    metrics.reconnected(RECEIVER)
    metrics.handshake_failed(RECEIVER)
    return metrics


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in doc["panels"] for target in panel.get("targets", [])]
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    return exprs


def rule_expressions() -> list[str]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:sidecar|process)_[a-z_]+\b", expr))


def test_prometheus_sees_exact_counters_from_the_endpoint(prometheus: Prometheus, tmp_path: Path) -> None:
    pattern = f"{tmp_path}/*.log"
    metrics = Metrics("stream")
    selector = f'{{pattern="{pattern}"}}'
    with exporter(metrics, prometheus.target_port):
        for batch in range(1, 1001):
            metrics.read(pattern, batch, batch * 101)
            metrics.delivered(pattern, batch, batch * 101)
        total = sum(range(1, 1001))
        prometheus.wait_for(
            f"sidecar_lines_delivered_total{selector}", lambda v: v == total, f"{total} lines delivered"
        )
        assert prometheus.value(f"sidecar_bytes_delivered_total{selector}") == total * 101
        assert prometheus.value(f"sidecar_lines_read_total{selector}") == total
        assert prometheus.value(f"sidecar_bytes_read_total{selector}") == total * 101


def test_every_dashboard_query_returns_data(prometheus: Prometheus, tmp_path: Path) -> None:
    pattern = f"{tmp_path}/*.log"
    metrics = populated(pattern)
    with exporter(metrics, prometheus.target_port):
        # rate() needs two samples of the new series.
        scrapes = f'count_over_time(sidecar_lines_read_total{{pattern="{pattern}"}}[1m])'
        prometheus.wait_for(scrapes, lambda v: (v or 0) >= 2, "two scrapes")
        metrics.read(pattern, 5, 500)
        metrics.chunk_acked(RECEIVER, 10, 0.02)
        prometheus.wait_for(scrapes, lambda v: (v or 0) >= 3, "a third scrape")
        empty = [expr for expr in dashboard_expressions() if not prometheus.query(expr)]
    assert empty == []


def test_every_alert_rule_evaluates_without_error(prometheus: Prometheus, tmp_path: Path) -> None:
    with exporter(populated(f"{tmp_path}/*.log"), prometheus.target_port):
        for expr in rule_expressions():
            prometheus.query(expr)  # raises QueryError on any problem
        prometheus.wait_for("count(sidecar_build_info)", lambda v: v == 1, "a scrape")
        rules = prometheus.rules()
    assert len(rules) == len(rule_expressions())
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] == "err"] == []


def test_dashboard_and_rules_name_only_metrics_the_sidecar_exposes() -> None:
    exposed = set(re.findall(r"^(\w+)[ {]", generate_latest(populated("p").registry).decode(), re.MULTILINE))
    used = set().union(*(metric_names(expr) for expr in [*dashboard_expressions(), *rule_expressions()]))
    assert used - exposed == set()


def test_dashboard_covers_every_sidecar_metric() -> None:
    exposed = {family.name for family in populated("p").registry.collect() if family.name.startswith("sidecar_")}
    used = set().union(*(metric_names(expr) for expr in dashboard_expressions()))
    counters = {name.removesuffix("_total") for name in used} | {name.removesuffix("_bucket") for name in used}
    assert exposed - counters - {"sidecar_build"} == set()


def test_rules_file_passes_promtool() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheusrule_has_the_same_groups_as_the_rules_file() -> None:
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            body: bytes = response.read()
            return response.status, body
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_stream_mode_counters_in_prometheus_equal_what_was_written(
    prometheus: Prometheus, log_dir: Path, sidecar: SidecarFactory
) -> None:
    pattern = f"{log_dir}/*.log"
    first, second = (log_dir / "a.log", log_dir / "b.log")
    first.write_bytes(b"".join(b"first %d\n" % i for i in range(700)))
    second.write_bytes(b"".join(b"second line %d\n" % i for i in range(300)))
    port = prometheus.target_port
    process = sidecar(pattern, "--metrics-port", str(port), "--metrics-address", "127.0.0.1", stdout="file")
    selector = f'{{pattern="{pattern}"}}'
    prometheus.wait_for(f"sidecar_lines_delivered_total{selector}", lambda v: v == 1000, "1000 lines delivered")
    with first.open("ab") as out:
        out.write(b"late line\n" * 24)
    prometheus.wait_for(f"sidecar_lines_delivered_total{selector}", lambda v: v == 1024, "1024 lines delivered")
    written = first.stat().st_size + second.stat().st_size
    assert len(process.output()) == written
    assert prometheus.value(f"sidecar_bytes_delivered_total{selector}") == written
    assert prometheus.value(f"sidecar_lines_read_total{selector}") == 1024
    assert prometheus.value(f"sidecar_bytes_read_total{selector}") == written
    assert prometheus.value(f"sidecar_files_opened_total{selector}") == 2
    assert prometheus.value('sidecar_files_watched{mode="stream"}') == 2
    assert fetch(port, "/healthz") == (200, b"alive\n")
    assert fetch(port, "/readyz") == (200, b"ready\n")
    status, body = fetch(port, "/metrics")
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, check=False)
    assert (status, lint.returncode, lint.stdout + lint.stderr) == (200, 0, b"")
    assert process.stop() == 0


def test_agent_mode_counters_in_prometheus_equal_what_was_acknowledged(
    prometheus: Prometheus, log_dir: Path, sidecar: SidecarFactory
) -> None:
    pattern = f"{log_dir}/*.log"
    (log_dir / "app.log").write_bytes(b"".join(b"agent line %d\n" % i for i in range(1500)))
    port = prometheus.target_port
    with ForwardReceiver() as receiver:
        target = f'{{receiver="127.0.0.1:{receiver.port}"}}'
        process = sidecar(
            pattern,
            *("--metrics-port", str(port), "--metrics-address", "127.0.0.1"),
            *("--fluentd-host", "127.0.0.1", "--fluentd-port", str(receiver.port)),
            *("--flush-interval", "0.1s", "--chunk-records", "400", "--outage-limit", "3s"),
            mode="agent",
        )
        delivered = f'sidecar_lines_delivered_total{{mode="agent",pattern="{pattern}"}}'
        prometheus.wait_for(delivered, lambda v: v == 1500, "1500 lines acknowledged")
        assert len(receiver.events()) == 1500
        assert prometheus.value(f"sidecar_records_acked_total{target}") == 1500
        assert prometheus.value(f"sidecar_chunks_acked_total{target}") == 4
        assert prometheus.value(f"sidecar_receiver_connected{target}") == 1
        assert prometheus.value(f'sidecar_lines_read_total{{mode="agent",pattern="{pattern}"}}') == 1500
        assert fetch(port, "/readyz") == (200, b"ready\n")
    # The receiver is gone while the app is quiet: seen down at once, still ready within the outage limit.
    stopped = time.monotonic()
    assert fetch(port, "/readyz") == (200, b"ready\n")
    prometheus.wait_for(f"sidecar_receiver_connected{target}", lambda v: v == 0, "the receiver seen down")
    status, body = 200, b""
    while status == 200 and time.monotonic() < stopped + 15:
        time.sleep(0.1)
        status, body = fetch(port, "/readyz")
    assert time.monotonic() - stopped >= 2.5
    assert status == 503
    assert b"receiver: no Forward receiver connected" in body
    assert b"(outage limit 3s)" in body
    assert fetch(port, "/healthz") == (200, b"alive\n")
    assert process.stop() == 0


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = [
        (x, y)
        for panel in panels
        for x in range(panel["gridPos"]["x"], panel["gridPos"]["x"] + panel["gridPos"]["w"])
        for y in range(panel["gridPos"]["y"], panel["gridPos"]["y"] + panel["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in panels)
