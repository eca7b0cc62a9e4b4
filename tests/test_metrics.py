"""The Prometheus series of :class:`sidecar.observe.metrics.Metrics`, read back from its own registry."""

from __future__ import annotations

import inspect
import subprocess

from prometheus_client import generate_latest

import sidecar
from sidecar.core.events import ROTATION_KINDS, Observer
from sidecar.observe.metrics import Metrics

PATTERN = "/var/log/app/*.log"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def sidecar_series(metrics: Metrics) -> list[str]:
    """The exposition's ``sidecar_`` sample lines (``process_*`` move by themselves)."""
    return [line for line in generate_latest(metrics.registry).decode().splitlines() if line.startswith("sidecar_")]


def test_metrics_is_an_observer_for_the_core_and_every_event_shows_in_a_series() -> None:
    """Every method of the core's Observer exists on Metrics with the same parameters, and none is a no-op."""
    arguments = {"pattern": PATTERN, "kind": "rename", "lines": 3, "nbytes": 300, "reason": "eacces",
                 "count": 7, "oldest_seconds": 2.0, "ok": False}
    methods = [name for name, member in vars(Observer).items() if callable(member) and not name.startswith("_")]
    assert len(methods) >= 10
    metrics = Metrics("stream", clock=FakeClock())
    observer: Observer = metrics
    for name in methods:
        wanted = list(inspect.signature(getattr(Observer, name)).parameters)
        assert list(inspect.signature(getattr(Metrics, name)).parameters) == wanted, name
        before = sidecar_series(metrics)
        getattr(observer, name)(*(arguments[p] for p in wanted[1:]))
        assert sidecar_series(metrics) != before, f"Observer.{name} left no trace in the metrics"


def test_read_and_delivered_counters_are_exact_over_many_calls() -> None:
    metrics = Metrics("stream")
    for i in range(10_000):
        metrics.read(PATTERN, 3, 1000 + i)
        metrics.delivered(PATTERN, 2, 999 + i)
    labels = {"mode": "stream", "pattern": PATTERN}
    assert value(metrics, "sidecar_lines_read_total", **labels) == 30_000
    assert value(metrics, "sidecar_bytes_read_total", **labels) == 10_000 * 1000 + sum(range(10_000))
    assert value(metrics, "sidecar_lines_delivered_total", **labels) == 20_000
    assert value(metrics, "sidecar_bytes_delivered_total", **labels) == 10_000 * 999 + sum(range(10_000))


def test_counters_stay_exact_beyond_32_bits() -> None:
    metrics = Metrics("agent")
    metrics.delivered(PATTERN, 1, 2**40 + 1)
    metrics.delivered(PATTERN, 1, 1)
    assert value(metrics, "sidecar_bytes_delivered_total", mode="agent", pattern=PATTERN) == 2**40 + 2


def test_a_new_pattern_gets_every_series_at_zero() -> None:
    metrics = Metrics("stream")
    metrics.file_opened(PATTERN)
    labels = {"mode": "stream", "pattern": PATTERN}
    for kind in ROTATION_KINDS:
        assert value(metrics, "sidecar_files_rotated_total", kind=kind, **labels) == 0
    assert value(metrics, "sidecar_lines_delivered_total", **labels) == 0
    assert value(metrics, "sidecar_bytes_given_up_total", **labels) == 0
    assert value(metrics, "sidecar_files_opened_total", **labels) == 1


def test_file_events_are_counted_by_pattern_kind_and_reason() -> None:
    metrics = Metrics("stream")
    other = "/data/*.txt"
    metrics.rotated(PATTERN, "copytruncate")
    metrics.rotated(PATTERN, "copytruncate")
    metrics.rotated(other, "symlink")
    metrics.file_closed(PATTERN)
    metrics.long_line(PATTERN)
    metrics.unparsed(PATTERN)
    metrics.multiline_truncated(PATTERN)
    metrics.read_error(other, "EACCES")
    metrics.given_up(PATTERN, 4096)
    metrics.files_watched(7)
    labels = {"mode": "stream", "pattern": PATTERN}
    assert value(metrics, "sidecar_files_rotated_total", kind="copytruncate", **labels) == 2
    assert value(metrics, "sidecar_files_rotated_total", kind="symlink", mode="stream", pattern=other) == 1
    assert value(metrics, "sidecar_files_rotated_total", kind="symlink", **labels) == 0
    assert value(metrics, "sidecar_files_closed_total", **labels) == 1
    assert value(metrics, "sidecar_long_lines_split_total", **labels) == 1
    assert value(metrics, "sidecar_unparsed_lines_total", **labels) == 1
    assert value(metrics, "sidecar_multiline_groups_truncated_total", **labels) == 1
    assert value(metrics, "sidecar_read_errors_total", reason="EACCES", mode="stream", pattern=other) == 1
    assert value(metrics, "sidecar_bytes_given_up_total", **labels) == 4096
    assert value(metrics, "sidecar_files_watched", mode="stream") == 7


def test_lag_age_keeps_growing_between_backlog_reports() -> None:
    clock = FakeClock()
    metrics = Metrics("stream", clock=clock)
    assert value(metrics, "sidecar_lag_age_seconds", mode="stream") == 0
    metrics.backlog(5000, 2.0)
    clock.now += 10
    assert value(metrics, "sidecar_lag_bytes", mode="stream") == 5000
    assert value(metrics, "sidecar_lag_age_seconds", mode="stream") == 12.0
    metrics.backlog(0, 0.0)
    assert value(metrics, "sidecar_lag_age_seconds", mode="stream") == 0
    assert value(metrics, "sidecar_lag_bytes", mode="stream") == 0


def test_checkpoint_age_counts_from_the_last_successful_write() -> None:
    clock = FakeClock()
    metrics = Metrics("stream", clock=clock)
    clock.now += 3
    assert value(metrics, "sidecar_checkpoint_age_seconds", mode="stream") == 3
    metrics.checkpoint_written(True)
    clock.now += 5
    metrics.checkpoint_written(False)
    clock.now += 1
    assert value(metrics, "sidecar_checkpoint_age_seconds", mode="stream") == 6
    assert value(metrics, "sidecar_checkpoint_writes_total", mode="stream") == 1
    assert value(metrics, "sidecar_checkpoint_write_failures_total", mode="stream") == 1


def test_agent_series_are_counted_per_receiver() -> None:
    metrics = Metrics("agent")
    receiver = "fluentd:24224"
    metrics.receiver_up(receiver, True)
    metrics.chunk_sent(receiver, 100)
    metrics.chunk_sent(receiver, 50)
    metrics.chunk_acked(receiver, 100, 0.004)
    metrics.chunk_retried(receiver, 50)
    metrics.chunk_failed(receiver, 50)
    metrics.reconnected(receiver)
    metrics.handshake_failed(receiver)
    assert value(metrics, "sidecar_receiver_connected", receiver=receiver) == 1
    assert value(metrics, "sidecar_chunks_sent_total", receiver=receiver) == 2
    assert value(metrics, "sidecar_records_sent_total", receiver=receiver) == 150
    assert value(metrics, "sidecar_chunks_acked_total", receiver=receiver) == 1
    assert value(metrics, "sidecar_records_acked_total", receiver=receiver) == 100
    assert value(metrics, "sidecar_records_retried_total", receiver=receiver) == 50
    assert value(metrics, "sidecar_records_failed_total", receiver=receiver) == 50
    assert value(metrics, "sidecar_receiver_reconnects_total", receiver=receiver) == 1
    assert value(metrics, "sidecar_handshake_failures_total", receiver=receiver) == 1
    assert value(metrics, "sidecar_ack_latency_seconds_bucket", receiver=receiver, le="0.005") == 1
    assert value(metrics, "sidecar_ack_latency_seconds_bucket", receiver=receiver, le="0.0025") == 0
    metrics.receiver_up(receiver, False)
    assert value(metrics, "sidecar_receiver_connected", receiver=receiver) == 0


def test_both_modes_expose_the_same_metric_names() -> None:
    def names(mode: str) -> set[str]:
        return {family.name for family in Metrics(mode).registry.collect()}

    assert names("stream") == names("agent")


def test_build_info_and_process_metrics_are_exposed() -> None:
    metrics = Metrics("agent")
    assert value(metrics, "sidecar_build_info", version=sidecar.__version__, mode="agent") == 1
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert value(metrics, name) is not None, name


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics("stream"), Metrics("stream")
    first.read(PATTERN, 1, 1)
    assert first.registry is not second.registry
    assert value(second, "sidecar_lines_read_total", mode="stream", pattern=PATTERN) is None


def test_exposition_passes_promtool_lint() -> None:
    metrics = Metrics("agent")
    metrics.read(PATTERN, 1, 10)
    metrics.read_error(PATTERN, "ENOENT")
    metrics.chunk_acked("fluentd:24224", 1, 0.01)
    metrics.backlog(10, 1.0)
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(metrics.registry),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""
