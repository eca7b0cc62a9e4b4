"""The agent mode's :class:`~sidecar.core.sink.Sink`: lines -> chunks -> a Forward receiver, committed on ack.

Each batch is split into lines once and encoded in bulk into the open chunk of its tag. A chunk is sealed
when it reaches ``chunk_records``, when the next record would take it past ``chunk_bytes`` (a strict
bound on its msgpack payload, the bytes a receiver decompresses), or when it has been open
``flush_interval`` (a timer task). Adding records and sealing never wait, so nothing joins a chunk once it
is sealed and a batch's records stay in file order. Sealed chunks queue in order and are handed to the
sender, one task each, as the in-flight window has room: at most ``max_in_flight`` wait for their
acknowledgement. While chunks queue, :meth:`ForwardSink.emit` waits before returning, which stops the
follow core from reading on. That is what keeps memory bounded while a receiver is down: the log files
are the buffer, not this process. The timer never waits for the window, so ``on_tick`` (the receiver
watch, the outage clock) keeps running during an outage.

A batch is committed (the checkpoint may pass it) only when every chunk holding any of its lines is
acknowledged, tracked by a reference-counted :class:`_Hold`. With multiline grouping, an incomplete
group also holds the batches its lines came from, so a checkpoint never passes lines still waiting for
the rest of their stack trace. Groups are kept per file generation (``batch.source.file``), never per
path, so a rotated file and its successor are never joined. With ``--require-ack false`` the sender
returns once a chunk is written, so commits happen on write (at-most-once across a receiver crash).

A single record larger than ``chunk_bytes`` cannot be split: it goes out alone, uncompressed (Fluent Bit
reads a PackedForward message whole, up to its ``Buffer_Max_Size``), and is logged with a running count.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.core.sink import Batch, FileRef, Source
from sidecar.errors import ForwardError
from sidecar.log import get_logger
from sidecar.modes.agent.multiline import Grouper, RuleFactory
from sidecar.modes.agent.records import Encoder, RecordShape

log = get_logger("agent")

# Per-file multiline state is kept while files come and go; past this many files, groupers holding
# nothing are dropped (their rule state only matters inside a stack trace).
_GROUPERS_LIMIT = 10_000

#: ``--chunk-bytes`` without compression: well inside Fluent Bit's default ``Buffer_Max_Size``
#: (6,144,000 bytes), the most it reads of one message.
CHUNK_BYTES = 2 * 1024 * 1024

#: Fluent Bit's default in_forward ``Buffer_Chunk_Size``: the most it decompresses in one piece.
FLUENT_BIT_PIECE = 1_024_000

#: ``--chunk-bytes`` with ``--compress gzip``. Fluent Bit's in_forward (v4.2.8 and before) decompresses a
#: CompressedPackedForward chunk in pieces of ``Buffer_Chunk_Size`` (default 1,024,000 bytes; ``1M`` in
#: its configuration is 1,000,000) and drops the records that straddle two pieces, acknowledging the
#: chunk all the same. Measured there: payloads up to the piece size arrive whole, larger ones lose
#: records. 768 KiB (786,432 bytes) leaves over 20% below both.
COMPRESSED_CHUNK_BYTES = 768 * 1024


def default_chunk_bytes(compress: bool) -> int:
    """The ``--chunk-bytes`` a sink uses when none is given."""
    return COMPRESSED_CHUNK_BYTES if compress else CHUNK_BYTES


class ChunkSender(Protocol):
    """Delivers chunks (``sidecar.forward.pool.ForwardPool``)."""

    async def send_chunk(self, tag: str, entries: list[bytes], count: int, compress: bool = False) -> None:
        """Return once the chunk is acknowledged (or written, without acks); resend meanwhile.

        Takes the pieces: once they are packed into the message the list is emptied, so a chunk in
        flight is held once, as its message. ``compress`` sends it as CompressedPackedForward.
        """

    async def close(self) -> None:
        """Stop: sends still waiting fail with :class:`ForwardError`."""


class AgentObserver(Protocol):
    """The metrics calls agent mode makes (``sidecar.observe.metrics.Metrics``)."""

    def delivered(self, pattern: str, lines: int, nbytes: int) -> None: ...

    def unparsed(self, pattern: str) -> None: ...

    def multiline_truncated(self, pattern: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """Chunking, flow control and multiline bounds; defaults are the documented CLI defaults."""

    chunk_records: int = 10_000
    chunk_bytes: int = CHUNK_BYTES
    compress: bool = False
    flush_interval: float = 1.0
    max_in_flight: int = 4
    multiline_timeout: float = 1.0
    multiline_max_lines: int = 1000
    multiline_max_bytes: int = 1024 * 1024


def _split_lines(data: memoryview) -> list[bytes]:
    """The lines of ``data`` (each ends in LF) without their line ends, a CR before the LF included.

    The copy of the whole batch that splitting needs is dropped on return: ``emit`` may wait a long
    time for the in-flight window, and should hold the batch once (as entries) meanwhile, not twice.
    """
    whole = bytes(data)
    lines = whole.split(b"\n")
    lines.pop()  # data ends with b"\n": the last piece is empty
    if b"\r\n" in whole:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines


class _Hold:
    """Commits a batch when its last owner lets go: the emit call, chunks, an incomplete group."""

    __slots__ = ("_batch", "_nbytes", "_observer", "count")

    def __init__(self, batch: Batch, nbytes: int, observer: AgentObserver) -> None:
        self._batch = batch
        self._nbytes = nbytes
        self._observer = observer
        self.count = 1

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._batch.commit()
            self._observer.delivered(self._batch.source.pattern, self._batch.lines, self._nbytes)


@dataclass(slots=True)
class _Chunk:
    """Entries gathered for one tag, and the batches they came from."""

    tag: str
    opened: float
    compress: bool
    parts: list[bytes] = field(default_factory=list)
    records: int = 0
    nbytes: int = 0
    holds: list[_Hold] = field(default_factory=list)

    def add(self, entries: bytes, count: int, holds: list[_Hold]) -> None:
        self.parts.append(entries)
        self.records += count
        self.nbytes += len(entries)
        for hold in holds:
            hold.count += 1
        self.holds.extend(holds)


@dataclass(slots=True)
class _FileGroups:
    """One file generation's multiline state: its grouper and the holds of the lines in its incomplete group."""

    grouper: Grouper
    source: Source
    holds: list[_Hold] = field(default_factory=list)


class ForwardSink:
    """Ships batches as Forward chunks; see the module docstring."""

    reads_descriptor = False

    def __init__(
        self,
        sender: ChunkSender,
        shape: RecordShape,
        encoder: Encoder,
        observer: AgentObserver,
        options: SinkOptions | None = None,
        multiline: RuleFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._sender = sender
        self._shape = shape
        self._encoder = encoder
        self._observer = observer
        self._options = options or SinkOptions()
        self._multiline = multiline
        self._clock = clock
        self._on_tick = on_tick
        self._open: dict[str, _Chunk] = {}
        self._groups: dict[FileRef, _FileGroups] = {}
        self._sealed: deque[_Chunk] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self.oversized = 0

    def start(self) -> None:
        """Start the flush timer; call inside the running loop before the first :meth:`emit`."""
        if self._timer is None:
            self._timer = asyncio.create_task(self._tick(), name="agent-flush-timer")

    async def emit(self, batch: Batch) -> None:
        holds = self._take(batch)
        while self._sealed:
            await self._room.wait()
        # Not in a ``finally``: if waiting was interrupted (cancelled at shutdown), the batch must stay
        # uncommitted, to be read again after the restart.
        for owned in holds:
            owned.release()

    def write_now(self, source: Source, data: memoryview, lines: int) -> bool:
        return False  # lines are safe only once a receiver acknowledged them

    def offer(self, batch: Batch) -> bool:
        """Taken unless chunks wait for the window, which is when :meth:`emit` would hold the reader back."""
        if self._sealed:
            return False
        for owned in self._take(batch):
            owned.release()
        return True

    def _take(self, batch: Batch) -> list[_Hold]:
        """Encode the batch's lines (those of complete groups) into open chunks; the holds this call owns."""
        lines = _split_lines(batch.data)
        hold = _Hold(batch, len(batch.data), self._observer)
        holds = [hold]
        if self._multiline is not None:
            lines, holds = self._group(batch.source, lines, hold)
        if lines:
            self._add(batch.source, lines, holds)
        return holds

    async def flush(self) -> None:
        """Nothing to do: chunks are sealed by size and ``--flush-interval``, not by the reader's pauses, which
        under a trickle of lines would send a chunk (and wait for an ack) per line."""

    def flush_now(self) -> bool:
        return True

    async def drain(self, timeout: float) -> None:
        """Flush held groups and open chunks, wait up to ``timeout`` for their acks, then close."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        self._flush_groups(force=True)
        for tag in list(self._open):
            self._seal(tag)
        try:
            async with asyncio.timeout(timeout):
                while self._deliveries:
                    await asyncio.wait(set(self._deliveries))
        except TimeoutError:
            unacked = sum(1 for task in self._deliveries if not task.done())
            log.warning("drain_timeout", unacked_chunks=unacked, unsent_chunks=len(self._sealed))
        self._closed = True
        await self._sender.close()
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))

    # --- internals -----------------------------------------------------------------------------------

    def _group(self, source: Source, lines: list[bytes], hold: _Hold) -> tuple[list[bytes], list[_Hold]]:
        """Complete multiline groups of ``lines`` and every hold they cover (each owned once by the caller).

        The incomplete group left over takes its own share of ``hold``; holds of an earlier incomplete
        group pass to the caller when that group is completed now, and stay with the group otherwise.
        """
        state = self._groups.get(source.file)
        if state is None:
            factory = self._multiline
            assert factory is not None
            if len(self._groups) >= _GROUPERS_LIMIT:
                self._groups = {f: s for f, s in self._groups.items() if s.grouper.pending}
            options = self._options
            grouper = Grouper(factory(), options.multiline_max_lines, options.multiline_max_bytes)
            state = self._groups[source.file] = _FileGroups(grouper, source)
        split_before = state.grouper.split
        records = state.grouper.feed(lines, self._clock())
        for _ in range(state.grouper.split - split_before):
            self._observer.multiline_truncated(source.pattern)
        holds = [hold]
        if records:
            holds.extend(state.holds)
            state.holds = []
        if state.grouper.pending:
            hold.count += 1
            state.holds.append(hold)
        return records, holds

    def _flush_groups(self, force: bool) -> None:
        """Ship incomplete groups that waited ``multiline_timeout`` (all of them with ``force``)."""
        deadline = self._clock() - self._options.multiline_timeout
        for state in list(self._groups.values()):
            if not state.grouper.pending or (not force and state.grouper.updated > deadline):
                continue
            group = state.grouper.flush()
            holds, state.holds = state.holds, []
            if group is not None:
                self._add(state.source, [group], holds)
            for owned in holds:
                owned.release()

    def _add(self, source: Source, records: list[bytes], holds: list[_Hold]) -> None:
        """Encode ``records`` into the open chunk of the file's tag, sealing chunks as they fill."""
        options = self._options
        shape = self._shape.for_path(source.path)
        time_ns = time.time_ns()
        start = 0
        while start < len(records):
            chunk = self._open.get(shape.tag)
            if chunk is None:
                chunk = self._open[shape.tag] = _Chunk(shape.tag, self._clock(), options.compress)
            piece = records[start : start + options.chunk_records - chunk.records]
            room = options.chunk_bytes - chunk.nbytes
            entries, count = self._encoder.encode(piece, shape, time_ns, source.pattern, room)
            if count == 0 and chunk.records:
                self._seal(shape.tag)  # the next record does not fit: it starts the next chunk
                continue
            if count == 0:
                entries, count = self._encoder.encode(piece[:1], shape, time_ns, source.pattern, sys.maxsize)
                if len(entries) > options.chunk_bytes:
                    self._oversized(chunk, source, len(entries))
            chunk.add(entries, count, holds)
            start += count
            if count < len(piece) or chunk.records >= options.chunk_records or chunk.nbytes > options.chunk_bytes:
                self._seal(shape.tag)

    def _oversized(self, chunk: _Chunk, source: Source, nbytes: int) -> None:
        """A record that alone exceeds ``chunk_bytes`` goes in a chunk of its own, uncompressed."""
        chunk.compress = False
        self.oversized += 1
        log.warning(
            "record_over_chunk_bytes",
            file=source.path,
            bytes=nbytes,
            chunk_bytes=self._options.chunk_bytes,
            sent="alone, uncompressed",
            total=self.oversized,
        )

    def _seal(self, tag: str) -> None:
        """Queue the open chunk of ``tag`` for sending; nothing is added to it after this."""
        chunk = self._open.pop(tag, None)
        if chunk is not None:
            self._sealed.append(chunk)
            self._dispatch()

    def _dispatch(self) -> None:
        """Start delivering queued chunks, in the order they were sealed, while the window has room."""
        while self._sealed and len(self._deliveries) < self._options.max_in_flight and not self._closed:
            task = asyncio.create_task(self._deliver(self._sealed.popleft()))
            self._deliveries.add(task)
        if self._sealed:
            self._room.clear()
        else:
            self._room.set()

    async def _deliver(self, chunk: _Chunk) -> None:
        try:
            await self._sender.send_chunk(chunk.tag, chunk.parts, chunk.records, chunk.compress)
        except ForwardError as error:
            # Only when the sender was closed at shutdown: the lines stay uncommitted and are read
            # again after the restart.
            log.warning("chunk_not_delivered", tag=chunk.tag, records=chunk.records, error=str(error))
            return
        finally:
            task = asyncio.current_task()
            assert task is not None
            self._deliveries.discard(task)
            self._dispatch()
        for hold in chunk.holds:
            hold.release()

    async def _tick(self) -> None:
        """Seal chunks open longer than ``flush_interval``; ship groups that timed out; call ``on_tick``."""
        options = self._options
        period = max(0.01, min(options.flush_interval, options.multiline_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            if self._on_tick is not None:
                self._on_tick()
            deadline = self._clock() - options.flush_interval
            for tag, chunk in list(self._open.items()):
                if chunk.opened <= deadline:
                    self._seal(tag)
            if self._groups:
                self._flush_groups(force=False)
