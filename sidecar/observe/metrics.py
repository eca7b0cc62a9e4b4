"""Prometheus series for everything the sidecar does, in both modes under the same names.

:class:`Metrics` is the :class:`~sidecar.core.events.Observer` the follow core reports to, plus the calls a
mode makes when lines are delivered and, in agent mode, when chunks travel to a receiver. Each instance
owns its own :class:`~prometheus_client.CollectorRegistry`, so tests and embedders can run several
without colliding in the library's global registry.

Label rules: ``mode`` (stream or agent) and ``pattern`` (the configured glob, never a file name, so
rotated names cannot grow cardinality) on the pipeline series; ``receiver`` on the agent series. The
first time a pattern or receiver is seen, all of its series are created at zero, so that ``rate()`` and
``increase()`` see the first event instead of treating it as the series' birth.

Lines and bytes read and delivered are counted on every chunk of every file, so they are plain integer
adds (:class:`_Flow`), turned into the same four counters only when scraped (:class:`_FlowCollector`):
``Counter.inc`` takes a mutex, and four of them were a quarter of the per-file cost at 3,000 files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily

import sidecar
from sidecar.core.events import ROTATION_KINDS, RotationKind

Clock = Callable[[], float]

# Forward acks usually come within milliseconds; the top buckets catch a receiver that is flushing to
# a slow output and is about to make us retry.
ACK_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


# (attribute of _Flow, counter name, help) in the order they are exposed.
_FLOW_COUNTERS = (
    ("lines_read", "sidecar_lines_read", "Complete lines read from followed files."),
    ("bytes_read", "sidecar_bytes_read", "Bytes of complete lines read from followed files."),
    (
        "lines_delivered",
        "sidecar_lines_delivered",
        "Lines delivered: written to stdout (stream) or acknowledged (agent).",
    ),
    (
        "bytes_delivered",
        "sidecar_bytes_delivered",
        "Bytes of lines delivered: written (stream) or acknowledged (agent).",
    ),
)


class _Flow:
    """Lines and bytes of one pattern counted by one thread, with no lock.

    The core and the modes call from the event loop today, but an embedder or a future ack thread may
    not, and ``x += n`` is a read, an add and a write that the GIL does not make atomic. Only the thread
    that owns a flow writes it, so no update is lost; a scrape from any thread only reads and sums. A
    thread-local lookup costs ~40 ns a call, a tenth of one ``Counter.inc``.
    """

    __slots__ = ("bytes_delivered", "bytes_read", "lines_delivered", "lines_read")

    def __init__(self) -> None:
        self.lines_read = 0
        self.bytes_read = 0
        self.lines_delivered = 0
        self.bytes_delivered = 0


class _ThreadFlows(threading.local):
    """The calling thread's own flow of each pattern (``__init__`` runs in every thread that looks)."""

    def __init__(self) -> None:
        self.by_pattern: dict[str, _Flow] = {}


@dataclass(frozen=True, slots=True)
class _PatternSeries:
    """The children of one pattern, looked up once: ``labels()`` takes a lock and builds tuples."""

    opened: Counter
    closed: Counter
    rotated: dict[str, Counter]
    long_lines: Counter
    unparsed: Counter
    multiline_truncated: Counter
    given_up: Counter
    flows: list[_Flow] = field(default_factory=list)
    """One per thread that counted lines of this pattern (threads are few); kept when the thread ends."""


class _FlowCollector:
    """Exposes the flows as the counters they replace: same names, help, labels and created-at-zero."""

    def __init__(self, mode: str, patterns: dict[str, _PatternSeries]) -> None:
        self._mode = mode
        self._patterns = patterns

    def describe(self) -> list[CounterMetricFamily]:
        """The families without samples, so the registry sees their names (clashes, ``name[]`` queries)."""
        return [CounterMetricFamily(name, doc, labels=("mode", "pattern")) for _, name, doc in _FLOW_COUNTERS]

    def collect(self) -> list[CounterMetricFamily]:
        families = self.describe()
        for pattern, series in list(self._patterns.items()):
            flows = list(series.flows)
            for (attribute, _, _), family in zip(_FLOW_COUNTERS, families, strict=True):
                total = sum(getattr(flow, attribute) for flow in flows)
                family.add_metric((self._mode, pattern), float(total))
        return families


@dataclass(frozen=True, slots=True)
class _ReceiverSeries:
    """The children of one Forward receiver (``host:port``)."""

    chunks_sent: Counter
    records_sent: Counter
    chunks_acked: Counter
    records_acked: Counter
    chunks_retried: Counter
    records_retried: Counter
    chunks_failed: Counter
    records_failed: Counter
    connected: Gauge
    ack_latency: Histogram
    reconnects: Counter
    handshake_failures: Counter


class Metrics:
    """The sidecar's Prometheus series, fed by the follow core (as an Observer) and by the modes."""

    def __init__(self, mode: str, registry: CollectorRegistry | None = None, clock: Clock = time.monotonic):
        # ``*_created`` series would double what every scrape stores and no dashboard reads them; the
        # switch is process-wide, which is fine: the sidecar is the only exporter in its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.mode = mode
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._started = clock()
        self._patterns: dict[str, _PatternSeries] = {}
        self._receivers: dict[str, _ReceiverSeries] = {}
        self._flows = _ThreadFlows()
        self._lag_since: float | None = None
        self._last_checkpoint: float | None = None
        self._define_pipeline()
        self._define_agent()
        ProcessCollector(registry=self.registry)
        Info("sidecar_build", "Version of the running sidecar and its mode.", registry=self.registry).info(
            {"version": sidecar.__version__, "mode": mode}
        )

    def _define_pipeline(self) -> None:
        by_pattern = ("mode", "pattern")
        r = self.registry

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, (*by_pattern, *extra), registry=r)

        r.register(_FlowCollector(self.mode, self._patterns))
        self._opened = counter("sidecar_files_opened", "Files that began to be followed.")
        self._closed = counter("sidecar_files_closed", "Files read to their end and let go.")
        self._rotated = counter("sidecar_files_rotated", "Rotations seen, by kind of rotation.", extra=("kind",))
        self._long_lines = counter("sidecar_long_lines_split", "Lines longer than --max-line-bytes that were split.")
        self._unparsed = counter("sidecar_unparsed_lines", "Lines the configured parser could not parse.")
        self._multiline_truncated = counter(
            "sidecar_multiline_groups_truncated", "Multiline groups cut at the size or line limit."
        )
        self._read_errors = counter(
            "sidecar_read_errors", "Failures to open, stat or read a file, by reason.", extra=("reason",)
        )
        self._given_up = counter(
            "sidecar_bytes_given_up", "Bytes of rotated-away files abandoned unread past the rotate limit."
        )
        self._files_watched = Gauge("sidecar_files_watched", "Files currently followed.", ("mode",), registry=r)
        self._lag_bytes = Gauge(
            "sidecar_lag_bytes",
            "Bytes in followed files not yet delivered, summed over files.",
            ("mode",),
            registry=r,
        )
        Gauge(
            "sidecar_lag_age_seconds",
            "How long the oldest data not yet delivered has waited; 0 when nothing is waiting.",
            ("mode",),
            registry=r,
        ).labels(mode=self.mode).set_function(self._lag_age)
        self._checkpoint_writes = Counter(
            "sidecar_checkpoint_writes", "State file writes that succeeded.", ("mode",), registry=r
        )
        self._checkpoint_failures = Counter(
            "sidecar_checkpoint_write_failures", "State file writes that failed.", ("mode",), registry=r
        )
        Gauge(
            "sidecar_checkpoint_age_seconds",
            "Seconds since the last successful state file write (since start when there was none yet).",
            ("mode",),
            registry=r,
        ).labels(mode=self.mode).set_function(self._checkpoint_age)
        self._files_watched.labels(mode=self.mode).set(0)
        self._lag_bytes.labels(mode=self.mode).set(0)
        self._checkpoint_writes.labels(mode=self.mode)
        self._checkpoint_failures.labels(mode=self.mode)

    def _define_agent(self) -> None:
        r = self.registry
        by_receiver = ("receiver",)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, by_receiver, registry=r)

        self._chunks_sent = counter("sidecar_chunks_sent", "Forward chunks written to a receiver.")
        self._records_sent = counter("sidecar_records_sent", "Records in chunks written to a receiver.")
        self._chunks_acked = counter("sidecar_chunks_acked", "Forward chunks a receiver acknowledged.")
        self._records_acked = counter("sidecar_records_acked", "Records in chunks a receiver acknowledged.")
        self._chunks_retried = counter("sidecar_chunks_retried", "Forward chunks sent again after no ack.")
        self._records_retried = counter("sidecar_records_retried", "Records in chunks sent again.")
        self._chunks_failed = counter("sidecar_chunks_failed", "Forward chunks that failed to be sent.")
        self._records_failed = counter("sidecar_records_failed", "Records in chunks that failed to be sent.")
        self._connected = Gauge(
            "sidecar_receiver_connected",
            "1 while a connection to the receiver is up.",
            by_receiver,
            registry=r,
        )
        self._ack_latency = Histogram(
            "sidecar_ack_latency_seconds",
            "Time from sending a chunk to its acknowledgement.",
            by_receiver,
            buckets=ACK_LATENCY_BUCKETS,
            registry=r,
        )
        self._reconnects = counter("sidecar_receiver_reconnects", "Connections re-established to a receiver.")
        self._handshake_failures = counter(
            "sidecar_handshake_failures", "Shared-key handshakes a receiver refused or broke."
        )

    def _pattern(self, pattern: str) -> _PatternSeries:
        series = self._patterns.get(pattern)
        if series is None:
            labels = {"mode": self.mode, "pattern": pattern}
            candidate = _PatternSeries(
                opened=self._opened.labels(**labels),
                closed=self._closed.labels(**labels),
                rotated={kind: self._rotated.labels(**labels, kind=kind) for kind in ROTATION_KINDS},
                long_lines=self._long_lines.labels(**labels),
                unparsed=self._unparsed.labels(**labels),
                multiline_truncated=self._multiline_truncated.labels(**labels),
                given_up=self._given_up.labels(**labels),
            )
            # If two threads see a new pattern at once, both must count into one series and its flows.
            series = self._patterns.setdefault(pattern, candidate)
        return series

    def _new_flow(self, pattern: str) -> _Flow:
        flow = _Flow()
        self._pattern(pattern).flows.append(flow)
        self._flows.by_pattern[pattern] = flow
        return flow

    def _receiver(self, receiver: str) -> _ReceiverSeries:
        series = self._receivers.get(receiver)
        if series is None:
            series = _ReceiverSeries(
                chunks_sent=self._chunks_sent.labels(receiver),
                records_sent=self._records_sent.labels(receiver),
                chunks_acked=self._chunks_acked.labels(receiver),
                records_acked=self._records_acked.labels(receiver),
                chunks_retried=self._chunks_retried.labels(receiver),
                records_retried=self._records_retried.labels(receiver),
                chunks_failed=self._chunks_failed.labels(receiver),
                records_failed=self._records_failed.labels(receiver),
                connected=self._connected.labels(receiver),
                ack_latency=self._ack_latency.labels(receiver),
                reconnects=self._reconnects.labels(receiver),
                handshake_failures=self._handshake_failures.labels(receiver),
            )
            self._receivers[receiver] = series
        return series

    def _lag_age(self) -> float:
        return 0.0 if self._lag_since is None else max(0.0, self._clock() - self._lag_since)

    def _checkpoint_age(self) -> float:
        last = self._started if self._last_checkpoint is None else self._last_checkpoint
        return max(0.0, self._clock() - last)

    # Observer: called by the follow core.

    def file_opened(self, pattern: str) -> None:
        self._pattern(pattern).opened.inc()

    def file_closed(self, pattern: str) -> None:
        self._pattern(pattern).closed.inc()

    def rotated(self, pattern: str, kind: RotationKind) -> None:
        self._pattern(pattern).rotated[kind].inc()

    def read(self, pattern: str, lines: int, nbytes: int) -> None:
        flow = self._flows.by_pattern.get(pattern) or self._new_flow(pattern)
        flow.lines_read += lines
        flow.bytes_read += nbytes

    def long_line(self, pattern: str) -> None:
        self._pattern(pattern).long_lines.inc()

    def read_error(self, pattern: str, reason: str) -> None:
        self._pattern(pattern)
        self._read_errors.labels(mode=self.mode, pattern=pattern, reason=reason).inc()

    def given_up(self, pattern: str, nbytes: int) -> None:
        self._pattern(pattern).given_up.inc(nbytes)

    def files_watched(self, count: int) -> None:
        self._files_watched.labels(mode=self.mode).set(count)

    def backlog(self, nbytes: int, oldest_seconds: float) -> None:
        """Remember when the oldest waiting data arrived, so its age keeps growing between reports.

        A stalled core stops reporting; computing the age at scrape time is what lets an alert see it.
        """
        self._lag_bytes.labels(mode=self.mode).set(nbytes)
        self._lag_since = self._clock() - oldest_seconds if nbytes > 0 else None

    def checkpoint_written(self, ok: bool) -> None:
        if ok:
            self._last_checkpoint = self._clock()
            self._checkpoint_writes.labels(mode=self.mode).inc()
        else:
            self._checkpoint_failures.labels(mode=self.mode).inc()

    # Called by the modes.

    def delivered(self, pattern: str, lines: int, nbytes: int) -> None:
        """Lines are safe: written to stdout (stream) or acknowledged by a receiver (agent)."""
        flow = self._flows.by_pattern.get(pattern) or self._new_flow(pattern)
        flow.lines_delivered += lines
        flow.bytes_delivered += nbytes

    def unparsed(self, pattern: str) -> None:
        self._pattern(pattern).unparsed.inc()

    def multiline_truncated(self, pattern: str) -> None:
        self._pattern(pattern).multiline_truncated.inc()

    def chunk_sent(self, receiver: str, records: int) -> None:
        series = self._receiver(receiver)
        series.chunks_sent.inc()
        series.records_sent.inc(records)

    def chunk_acked(self, receiver: str, records: int, seconds: float) -> None:
        series = self._receiver(receiver)
        series.chunks_acked.inc()
        series.records_acked.inc(records)
        series.ack_latency.observe(seconds)

    def chunk_retried(self, receiver: str, records: int) -> None:
        series = self._receiver(receiver)
        series.chunks_retried.inc()
        series.records_retried.inc(records)

    def chunk_failed(self, receiver: str, records: int) -> None:
        series = self._receiver(receiver)
        series.chunks_failed.inc()
        series.records_failed.inc(records)

    def receiver_up(self, receiver: str, up: bool) -> None:
        self._receiver(receiver).connected.set(1 if up else 0)

    def reconnected(self, receiver: str) -> None:
        self._receiver(receiver).reconnects.inc()

    def handshake_failed(self, receiver: str) -> None:
        self._receiver(receiver).handshake_failures.inc()
