"""The agent sink in-process: chunking, the in-flight window, commit only on ack, multiline holds, drain.

Batches are made by hand (as the follow core makes them) and the sender is a stand-in whose acks the
test releases, so each test can stop time at the moment it is about (sent but not yet acknowledged).
"""

from __future__ import annotations

import asyncio
import functools
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import pytest

from sidecar.core.sink import Batch, FileRef, Source
from sidecar.errors import ForwardError
from sidecar.forward.client import ForwardOptions, Receiver
from sidecar.forward.pool import ForwardPool
from sidecar.modes.agent.multiline import make_rule_factory
from sidecar.modes.agent.parsers import make_parser, make_time_reader
from sidecar.modes.agent.records import Encoder, RecordShape, TagTemplate
from sidecar.modes.agent.sink import ForwardSink, SinkOptions
from tests.forward_receiver import ForwardReceiver

T = TypeVar("T")
Record = tuple[int, dict[str, Any]]


@dataclass
class Sent:
    tag: str
    records: list[Record]
    nbytes: int
    compress: bool


class Sender:
    """Records chunks; acknowledges them only while ``acking`` is set."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.acking = asyncio.Event()
        self.acking.set()
        self.closed = False

    async def send_chunk(self, tag: str, entries: list[bytes], count: int, compress: bool = False) -> None:
        payload = b"".join(entries)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 1)
        unpacker.feed(payload)
        entries.clear()
        records = [(_time_ns(t), r) for t, r in unpacker]
        assert len(records) == count
        self.sent.append(Sent(tag, records, len(payload), compress))
        waiter = asyncio.create_task(self.acking.wait())
        while not waiter.done():
            if self.closed:
                waiter.cancel()
                raise ForwardError("closed")
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        self.closed = True

    def lines(self) -> list[str]:
        return [r["log"] for s in self.sent for _, r in s.records]


def _time_ns(value: msgpack.ExtType) -> int:
    assert value.code == 0
    seconds, nanoseconds = struct.unpack(">II", value.data)
    return int(seconds) * 1_000_000_000 + int(nanoseconds)


@dataclass
class Observer:
    """Counts the agent's metrics calls."""

    deliveries: list[tuple[str, int, int]] = field(default_factory=list)
    unparsed_lines: Counter[str] = field(default_factory=Counter)
    truncated: Counter[str] = field(default_factory=Counter)

    def delivered(self, pattern: str, lines: int, nbytes: int) -> None:
        self.deliveries.append((pattern, lines, nbytes))

    def unparsed(self, pattern: str) -> None:
        self.unparsed_lines[pattern] += 1

    def multiline_truncated(self, pattern: str) -> None:
        self.truncated[pattern] += 1


class Harness:
    """A sink with its sender, observer and the batches given to it."""

    def __init__(self, sink: ForwardSink, sender: Sender, observer: Observer) -> None:
        self.sink = sink
        self.sender = sender
        self.observer = observer
        self.committed: list[int] = []
        self._next = 0

    async def emit(self, data: bytes, path: str = "/logs/app.log", file: FileRef | None = None) -> int:
        """Emit ``data`` as one batch of ``file`` (by default one identity per path); returns its number
        (as recorded in ``committed``)."""
        number, batch = self._batch(data, path, file)
        await self.sink.emit(batch)
        batch.data[:] = b"\0" * len(data)  # the core reuses its buffer once emit returns
        return number

    def offer(self, data: bytes, path: str = "/logs/app.log") -> bool:
        """Offer ``data`` as the next batch, as the core's quick path does; whether the sink took it."""
        _, batch = self._batch(data, path, None)
        taken = self.sink.offer(batch)
        batch.data[:] = b"\0" * len(data)
        return taken

    def _batch(self, data: bytes, path: str, file: FileRef | None) -> tuple[int, Batch]:
        number = self._next
        self._next += 1
        batch = Batch(
            Source(path, "/logs/*.log", file or FileRef(1, zlib.crc32(path.encode()))),
            memoryview(bytearray(data)),
            data.count(b"\n"),
            -1,
            -1,
            lambda: self.committed.append(number),
        )
        return number, batch


def make_harness(
    options: SinkOptions | None = None,
    *,
    parser: str = "none",
    time_key: str | None = None,
    multiline: str | None = None,
    multiline_start: str | None = None,
    fields: dict[str, str] | None = None,
    tag: str = "app.{file_stem}",
    on_tick: Callable[[], None] | None = None,
) -> Harness:
    sender = Sender()
    observer = Observer()
    pod = {"pod": "web-1", "namespace": "prod"}
    shape = RecordShape(TagTemplate(tag, pod), "log", "file", fields or {}, pod)
    encoder = Encoder(
        "log",
        make_parser(parser, None),  # type: ignore[arg-type]
        make_time_reader(time_key, None, parser),  # type: ignore[arg-type]
        observer,
    )
    sink = ForwardSink(
        sender,
        shape,
        encoder,
        observer,
        options or SinkOptions(flush_interval=0.05, multiline_timeout=0.05),
        make_rule_factory(multiline, multiline_start),
        on_tick=on_tick,
    )
    sink.start()
    return Harness(sink, sender, observer)


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), 10))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def blocked(awaitable: Awaitable[Any], seconds: float = 0.2) -> bool:
    """Whether ``awaitable`` is still waiting after ``seconds`` (it keeps running in the background)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.sleep(seconds)
    return not task.done()


def test_batch_is_committed_only_after_its_chunk_is_acknowledged() -> None:
    async def scenario() -> None:
        h = make_harness()
        h.sender.acking.clear()
        await h.emit(b"one\ntwo\n")
        await until(lambda: len(h.sender.sent) == 1)
        await asyncio.sleep(0.05)
        assert h.committed == []
        h.sender.acking.set()
        await until(lambda: h.committed == [0])
        assert h.observer.deliveries == [("/logs/*.log", 2, 8)]
        await h.sink.drain(1)

    run(scenario)


def test_records_hold_line_without_newline_path_pod_and_fields() -> None:
    async def scenario() -> None:
        h = make_harness(fields={"cluster": "eu", "log": "never overwrites the line"})
        await h.emit(b"crlf line\r\nplain\n\nlast \r inner cr\n")
        await h.sink.drain(1)
        assert h.sender.lines() == ["crlf line", "plain", "", "last \r inner cr"]
        record = h.sender.sent[0].records[0][1]
        assert record == {
            "log": "crlf line",
            "file": "/logs/app.log",
            "pod": "web-1",
            "namespace": "prod",
            "cluster": "eu",
        }
        assert h.sender.sent[0].tag == "app.app"

    run(scenario)


def test_chunks_are_bounded_by_records_and_a_split_batch_commits_after_all_its_chunks() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_records=3, flush_interval=0.05))
        h.sender.acking.clear()
        await h.emit(b"".join(b"line %d\n" % i for i in range(7)))
        await until(lambda: len(h.sender.sent) == 2)
        assert [len(s.records) for s in h.sender.sent] == [3, 3]
        await until(lambda: len(h.sender.sent) == 3)  # the last record goes with the flush timer
        assert h.committed == []
        h.sender.acking.set()
        await until(lambda: h.committed == [0])
        assert h.sender.lines() == [f"line {i}" for i in range(7)]
        await h.sink.drain(1)

    run(scenario)


@pytest.mark.parametrize("parser", ["none", "json"])
def test_chunks_never_exceed_chunk_bytes_and_are_sealed_only_when_the_next_record_would(parser: str) -> None:
    rng = random.Random(7)
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"p" * rng.randrange(0, 400)) for i in range(600)]

    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_bytes=4096, flush_interval=0.05), parser=parser)
        await h.emit(b"".join(line + b"\n" for line in lines[:250]))
        await h.emit(b"".join(line + b"\n" for line in lines[250:]))
        await h.sink.drain(1)
        assert [r.get("log") or r["n"] for s in h.sender.sent for _, r in s.records] == (
            [line.decode() for line in lines] if parser == "none" else list(range(600))
        )
        largest_entry = max(len(msgpack.packb(r)) + 11 for s in h.sender.sent for _, r in s.records)
        for sent in h.sender.sent[:-1]:
            assert 4096 - largest_entry - 4 * len(sent.records) < sent.nbytes <= 4096
        assert h.sender.sent[-1].nbytes <= 4096

    run(scenario)


def test_record_larger_than_chunk_bytes_goes_alone_uncompressed_in_order() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_bytes=4096, compress=True, flush_interval=0.05))
        await h.emit(b"before\n" + b"B" * 10_000 + b"\nafter\n")
        await h.sink.drain(1)
        assert [(s.compress, [r["log"][:3] for _, r in s.records]) for s in h.sender.sent] == [
            (True, ["bef"]),
            (False, ["BBB"]),
            (True, ["aft"]),
        ]
        assert h.sender.sent[1].nbytes > 10_000
        assert h.sink.oversized == 1
        assert h.committed == [0]

    run(scenario)


def test_emit_blocks_while_the_in_flight_window_is_full() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_records=1, max_in_flight=2, flush_interval=10))
        h.sender.acking.clear()
        await h.emit(b"a\n")
        await h.emit(b"b\n")
        assert await blocked(h.emit(b"c\n"))
        assert len(h.sender.sent) == 2
        h.sender.acking.set()
        await until(lambda: h.committed == [0, 1, 2])
        await h.sink.drain(1)

    run(scenario)


def test_offer_is_refused_while_chunks_wait_for_the_window_and_what_it_took_commits_on_ack() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_records=1, max_in_flight=2, flush_interval=10))
        h.sender.acking.clear()
        assert h.offer(b"a\n")
        assert h.offer(b"b\n")
        assert h.offer(b"c\n"), "the window is full, but no chunk waits for it yet"
        assert not h.offer(b"d\n"), "c's chunk waits for the window: the reader must wait in emit"
        h.sender.acking.set()
        await until(lambda: h.committed == [0, 1, 2])
        assert h.offer(b"e\n")
        await until(lambda: h.committed == [0, 1, 2, 4])
        assert h.sender.lines() == ["a", "b", "c", "e"]
        await h.sink.drain(1)

    run(scenario)


def test_emit_cancelled_while_waiting_for_the_window_leaves_its_batch_uncommitted() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(chunk_records=1, max_in_flight=1, flush_interval=10))
        h.sender.acking.clear()
        emitting = asyncio.ensure_future(h.emit(b"first\nsecond\n"))
        await until(lambda: len(h.sender.sent) == 1)
        emitting.cancel()
        h.sender.acking.set()
        await asyncio.sleep(0.1)
        assert h.committed == []
        await h.sink.drain(1)
        assert h.committed == []

    run(scenario)


def test_flush_interval_sends_a_partial_chunk() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(flush_interval=0.05))
        await h.emit(b"lonely\n")
        await until(lambda: h.committed == [0], timeout=1)
        assert h.sender.lines() == ["lonely"]
        await h.sink.drain(1)

    run(scenario)


def test_each_tag_gets_its_own_chunks() -> None:
    async def scenario() -> None:
        h = make_harness()
        await h.emit(b"a\n", "/logs/web.log")
        await h.emit(b"b\n", "/logs/worker.log")
        await h.sink.drain(1)
        assert sorted((s.tag, s.records[0][1]["log"]) for s in h.sender.sent) == [
            ("app.web", "a"),
            ("app.worker", "b"),
        ]

    run(scenario)


def test_drain_ships_the_open_chunk_and_waits_for_its_ack() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(flush_interval=60))
        await h.emit(b"at shutdown\n")
        assert h.sender.sent == []
        await h.sink.drain(2)
        assert h.committed == [0]
        assert h.sender.closed

    run(scenario)


def test_drain_gives_up_at_its_timeout_without_committing() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(flush_interval=60))
        h.sender.acking.clear()
        await h.emit(b"never acked\n")
        started = asyncio.get_running_loop().time()
        await h.sink.drain(0.2)
        assert asyncio.get_running_loop().time() - started < 1
        assert h.committed == []
        assert h.sender.closed

    run(scenario)


def test_unparsed_lines_are_shipped_as_they_are_and_counted() -> None:
    async def scenario() -> None:
        h = make_harness(parser="json")
        too_big = b'{"n":' + b"9" * 30 + b"}"
        too_deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        await h.emit(b'{"level":"info","msg":"ok"}\nnot json\n[1,2]\n' + too_big + b"\n" + too_deep + b"\n")
        await h.sink.drain(1)
        records = [r for s in h.sender.sent for _, r in s.records]
        assert records[0]["level"] == "info"
        assert records[0]["msg"] == "ok"
        assert "log" not in records[0]
        assert records[0]["pod"] == "web-1"
        assert [r["log"] for r in records[1:]] == ["not json", "[1,2]", too_big.decode(), too_deep.decode()]
        assert h.observer.unparsed_lines == {"/logs/*.log": 4}

    run(scenario)


def test_time_key_sets_the_event_time() -> None:
    async def scenario() -> None:
        h = make_harness(parser="json", time_key="ts")
        await h.emit(b'{"ts":"2024-05-01T10:00:00.25Z","msg":"a"}\n{"ts":"garbage","msg":"b"}\n')
        await h.sink.drain(1)
        (first_time, _), (second_time, _) = h.sender.sent[0].records
        assert first_time == 1714557600_250_000_000
        assert abs(second_time - time.time_ns()) < 5_000_000_000  # unparseable time: the read time

    run(scenario)


def test_multiline_group_across_batches_holds_both_commits_until_shipped() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(flush_interval=0.05, multiline_timeout=0.3), multiline="java")
        await h.emit(b"start\nERROR failed\njava.lang.IllegalStateException: boom\n")
        await h.emit(b"\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\n")
        await asyncio.sleep(0.15)
        # "start" went out, but batch 0 also holds the beginning of the incomplete trace
        assert h.sender.lines() == ["start"]
        assert h.committed == []
        await h.emit(b"next event\n")
        await until(lambda: h.committed == [0, 1])
        assert h.sender.lines()[1] == (
            "ERROR failed\njava.lang.IllegalStateException: boom\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)"
        )
        await until(lambda: h.committed == [0, 1, 2])  # "next event" shipped at the multiline timeout
        assert h.sender.lines()[2] == "next event"
        await h.sink.drain(1)

    run(scenario)


def test_multiline_group_is_shipped_at_drain() -> None:
    async def scenario() -> None:
        h = make_harness(SinkOptions(flush_interval=60, multiline_timeout=60), multiline_start=r"^\d")
        await h.emit(b"1 first\n  more\n")
        await h.sink.drain(1)
        assert h.sender.lines() == ["1 first\n  more"]
        assert h.committed == [0]

    run(scenario)


def test_multiline_group_over_its_line_bound_is_split_and_counted() -> None:
    async def scenario() -> None:
        options = SinkOptions(flush_interval=0.05, multiline_timeout=0.05, multiline_max_lines=3)
        h = make_harness(options, multiline_start=r"^S")
        await h.emit(b"S\n" + b" c\n" * 4)
        await h.sink.drain(1)
        assert h.sender.lines() == ["S\n c\n c", " c\n c"]
        assert h.observer.truncated == {"/logs/*.log": 1}
        assert h.committed == [0]

    run(scenario)


@pytest.mark.parametrize("successor", [FileRef(1, 2, 0), FileRef(1, 1, 1)], ids=["new-inode", "truncated"])
def test_multiline_groups_of_two_generations_at_one_path_never_join(successor: FileRef) -> None:
    async def scenario() -> None:
        options = SinkOptions(flush_interval=0.05, multiline_timeout=60)
        h = make_harness(options, multiline_start=r"^S")
        await h.emit(b"S old generation\n  its last line\n", file=FileRef(1, 1, 0))
        await h.emit(b"  first line of the new one\nS next\n", file=successor)
        await h.sink.drain(1)
        assert sorted(h.sender.lines()) == [
            "  first line of the new one",
            "S next",
            "S old generation\n  its last line",
        ]

    run(scenario)


def test_group_flushed_by_the_timer_never_overtakes_lines_still_waiting_for_the_window() -> None:
    async def scenario() -> None:
        options = SinkOptions(chunk_records=2, max_in_flight=1, flush_interval=60, multiline_timeout=0.05)
        h = make_harness(options, multiline_start=r"^S")
        h.sender.acking.clear()
        await h.emit(b"S0\nS1\nS2\n")  # S0 S1 fill the window; S2 waits for its group's end
        emitting = asyncio.ensure_future(h.emit(b"S3\nS4\nS5\nS6\nS7\n"))
        await asyncio.sleep(0.3)  # S7's group times out while S3..S6 wait for room
        assert not emitting.done()
        h.sender.acking.set()
        await emitting
        await h.sink.drain(1)
        assert h.sender.lines() == [f"S{i}" for i in range(8)]
        assert h.committed == [0, 1]

    run(scenario)


def test_tick_keeps_running_while_the_in_flight_window_is_full() -> None:
    async def scenario() -> None:
        ticks: list[float] = []
        options = SinkOptions(max_in_flight=1, flush_interval=0.02)
        h = make_harness(options, on_tick=lambda: ticks.append(time.monotonic()))
        h.sender.acking.clear()
        await h.emit(b"in flight\n")
        await until(lambda: len(h.sender.sent) == 1)
        await h.emit(b"waits for the window\n")
        await asyncio.sleep(0.1)  # the flush timer has sealed it by now: it waits for room
        seen = len(ticks)
        await until(lambda: len(ticks) >= seen + 5)
        assert len(h.sender.sent) == 1
        h.sender.acking.set()
        await until(lambda: h.committed == [0, 1])
        await h.sink.drain(1)

    run(scenario)


@pytest.mark.parametrize("compress", [False, True])
def test_sink_through_real_pool_to_receiver_delivers_every_line(compress: bool) -> None:
    with ForwardReceiver() as receiver:

        async def scenario() -> None:
            pool = ForwardPool([Receiver("127.0.0.1", receiver.port)], ForwardOptions())
            observer = Observer()
            shape = RecordShape(TagTemplate("t.{file}", {}), "log", "file", {}, {})
            options = SinkOptions(chunk_records=1000, compress=compress)
            sink = ForwardSink(pool, shape, Encoder("log", None, None, observer), observer, options)
            sink.start()
            committed: list[int] = []
            for start in range(0, 5000, 500):
                data = b"".join(b"n %d\n" % i for i in range(start, start + 500))
                commit = functools.partial(committed.append, start)
                batch = Batch(Source("/l/a.log", "/l/*"), memoryview(data), 500, -1, -1, commit)
                await sink.emit(batch)
            await sink.drain(5)
            assert sorted(committed) == list(range(0, 5000, 500)), "each batch committed once"

        asyncio.run(scenario())
        events = receiver.events()
    assert [e.record["log"] for e in events] == [f"n {i}" for i in range(5000)]
    assert {e.tag for e in events} == {"t.a.log"}
    assert all(m.mode == ("CompressedPackedForward" if compress else "PackedForward") for m in receiver.messages)
