"""Delivering chunks to an ordered list of receivers, at least once.

The first receiver that is up takes the traffic. When its connection fails (refused, lost, ack timed
out, garbage reply, handshake refused) it is marked down and retried after an exponential backoff with
jitter, so a fleet of sidecars does not reconnect in lockstep; meanwhile the next receiver in the list
takes new chunks. Once an earlier receiver is due for a retry it is probed in the background and, when
it answers, traffic returns to it.

:meth:`ForwardPool.send_chunk` returns only when the chunk is acknowledged; a chunk whose connection
broke before its ack is resent (with the same chunk id) on whatever receiver is up, as often as needed.
That is what makes agent mode at-least-once: the sink commits a batch only after ``send_chunk``
returned. With ``require_ack`` off, ``send_chunk`` returns once the bytes are written and a connection
loss can drop chunks already written.

Chunks are written in the order they were handed over, and so are resends: each waits until every chunk
before it is written on the same connection, so a receiver restart does not reorder a file's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sidecar.errors import ForwardError, HandshakeError
from sidecar.forward.client import Connection, ForwardOptions, Receiver
from sidecar.forward.protocol import new_chunk_id, pack_message


class ForwardMetrics(Protocol):
    """The agent-side methods of ``sidecar.observe.metrics.Metrics`` the pool reports to (``receiver`` = host:port).

    ``chunk_failed`` counts attempts that failed on that receiver; ``chunk_retried`` counts resends of a
    chunk, against the receiver that takes the resend.
    """

    def chunk_sent(self, receiver: str, records: int) -> None: ...

    def chunk_acked(self, receiver: str, records: int, seconds: float) -> None: ...

    def chunk_retried(self, receiver: str, records: int) -> None: ...

    def chunk_failed(self, receiver: str, records: int) -> None: ...

    def receiver_up(self, receiver: str, up: bool) -> None: ...

    def reconnected(self, receiver: str) -> None: ...

    def handshake_failed(self, receiver: str) -> None: ...


class NullForwardMetrics:
    """Metrics that go nowhere: the default."""

    def chunk_sent(self, receiver: str, records: int) -> None:
        pass

    def chunk_acked(self, receiver: str, records: int, seconds: float) -> None:
        pass

    def chunk_retried(self, receiver: str, records: int) -> None:
        pass

    def chunk_failed(self, receiver: str, records: int) -> None:
        pass

    def receiver_up(self, receiver: str, up: bool) -> None:
        pass

    def reconnected(self, receiver: str) -> None:
        pass

    def handshake_failed(self, receiver: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ReceiverStatus:
    """A receiver as the pool sees it, for status pages and readiness checks."""

    receiver: Receiver
    up: bool
    last_error: str | None


class _State:
    """The pool's book-keeping for one receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.name = str(receiver)
        self.connection: Connection | None = None
        self.failures = 0
        self.up = False
        self.next_attempt = 0.0
        self.ever_connected = False
        self.last_error: str | None = None
        self.lock = asyncio.Lock()

    def live(self) -> Connection | None:
        connection = self.connection
        return connection if connection is not None and not connection.closed else None

    def due(self, now: float) -> bool:
        return self.live() is None and now >= self.next_attempt and not self.lock.locked()


@dataclass(slots=True)
class _Unacked:
    """A chunk handed to the pool and not yet acknowledged: where it was last written, if anywhere still open."""

    written_on: Connection | None = None


class ForwardPool:
    """Chunks to the first receiver that is up, failing over in order; see the module docstring."""

    def __init__(
        self,
        receivers: Sequence[Receiver],
        options: ForwardOptions,
        metrics: ForwardMetrics | None = None,
    ) -> None:
        if not receivers:
            raise ValueError("ForwardPool needs at least one receiver")
        self._options = options
        self._metrics: ForwardMetrics = metrics or NullForwardMetrics()
        self._states = [_State(receiver) for receiver in receivers]
        self._probes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._tickets = itertools.count()
        self._unacked: dict[int, _Unacked] = {}
        self._progress = asyncio.Event()

    async def send_chunk(self, tag: str, entries: list[bytes], count: int, compress: bool = False) -> None:
        """Deliver ``count`` msgpack entries, concatenated in the pieces ``entries``, under ``tag``.

        ``compress`` sends them gzip-compressed (CompressedPackedForward); the sender decides per chunk,
        since only it knows whether the chunk fits what a receiver decompresses in one piece.
        Returns once acknowledged. The pool takes the pieces: it packs them into the message and empties
        the list, so the message is the one copy of a chunk kept until its ack (with the pieces kept as
        well, every chunk in flight would cost twice its size). Resends on any receiver trouble, waiting
        out backoffs while every receiver is down (the caller is thereby back-pressured). Raises
        :class:`ForwardError` only when the pool is closed first.
        """
        chunk_id = new_chunk_id() if self._options.require_ack else None
        message = pack_message(tag, entries, count, chunk_id, compress)
        entries.clear()
        ticket = next(self._tickets)
        mine = self._unacked[ticket] = _Unacked()
        try:
            await self._deliver(ticket, mine, message, chunk_id, count)
        finally:
            del self._unacked[ticket]
            self._moved()

    def status(self) -> list[ReceiverStatus]:
        """Each receiver in configured order: connected or not, and the last error seen."""
        return [ReceiverStatus(s.receiver, s.live() is not None, s.last_error) for s in self._states]

    def not_ready_reason(self) -> str | None:
        """None while some receiver is connected, else why none is (a ``Health`` ready check)."""
        if any(s.live() is not None for s in self._states):
            return None
        errors = "; ".join(f"{s.name}: {s.last_error or 'not connected yet'}" for s in self._states)
        return f"no Forward receiver connected ({errors})"

    def keep_connected(self) -> None:
        """Notice connections that broke while idle, and reconnect in the background when none is up.

        Call it regularly (the agent does on every tick). Without it a receiver that closed an idle
        connection (restarted, say) would be seen only with the next chunk: the connected gauge would
        stay 1, and a quiet app would leave the sidecar unready long after the receiver was back.
        """
        if self._closed:
            return
        for state in self._states:
            if state.connection is not None and state.connection.closed:
                self._lost(state, state.connection, state.connection.failure)
        if any(state.live() is not None for state in self._states):
            return
        now = time.monotonic()
        due = next((state for state in self._states if state.due(now)), None)
        if due is not None:
            self._start_probe(due)

    async def connect(self) -> None:
        """Connect to the first receiver that answers now (optional: sends connect on demand).

        Raises the last :class:`ForwardError` when none answers, e.g. to fail fast at startup on a wrong
        shared key; the pool stays usable and keeps retrying afterwards.
        """
        error: ForwardError | None = None
        for state in self._states:
            error = await self._open(state)
            if error is None:
                return
        assert error is not None
        raise error

    async def close(self) -> None:
        """Close every connection; chunks still in ``send_chunk`` fail with :class:`ForwardError`."""
        self._closed = True
        self._wake.set()
        self._moved()
        for probe in list(self._probes):
            probe.cancel()
        for state in self._states:
            if state.connection is not None:
                await state.connection.close()

    # --- internals -----------------------------------------------------------------------------------

    async def _deliver(self, ticket: int, mine: _Unacked, message: bytes, chunk_id: str | None, count: int) -> None:
        """Write ``message`` in its turn and wait for its ack, writing it again wherever it has to go."""
        attempts = 0
        while True:
            state, connection = await self._connection()
            if not self._turn(ticket, connection):
                await self._progress.wait()
                continue
            if attempts:
                self._metrics.chunk_retried(state.name, count)
            attempts += 1
            try:
                acked = await connection.send(message, chunk_id)
                mine.written_on = connection
                self._moved()
                written = time.monotonic()  # ack latency excludes the wait for an in-flight slot
                self._metrics.chunk_sent(state.name, count)
                await acked
            except ForwardError as error:
                mine.written_on = None
                self._moved()
                self._metrics.chunk_failed(state.name, count)
                self._lost(state, connection, error)
                continue
            state.failures = 0  # only a delivered chunk proves the receiver healthy, not a connect
            if chunk_id is not None:
                self._metrics.chunk_acked(state.name, count, time.monotonic() - written)
            return

    def _turn(self, ticket: int, connection: Connection) -> bool:
        """Whether every chunk handed over before this one is already written on ``connection``.

        Chunks are written in the order they were handed over, and after a connection broke they are
        written again in that order, so a receiver restart does not reorder a file's lines.
        """
        for earlier, unacked in self._unacked.items():
            if earlier >= ticket:
                return True
            if unacked.written_on is not connection:
                return False
        return True

    def _moved(self) -> None:
        """Wake the chunks waiting for their turn: one was written, acknowledged or lost."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def _connection(self) -> tuple[_State, Connection]:
        """The connection of the first receiver that is up, connecting (and waiting) as needed."""
        while True:
            if self._closed:
                raise ForwardError("forward pool closed before the chunk was acknowledged")
            now = time.monotonic()
            for index, state in enumerate(self._states):
                connection = state.live()
                if connection is not None:
                    self._probe_earlier(index, now)
                    return state, connection
                if state.connection is not None:  # broke while idle (receiver closed it)
                    self._lost(state, state.connection, state.connection.failure)
            for state in self._states:
                if state.due(time.monotonic()) and await self._open(state) is None:
                    connection = state.live()
                    if connection is not None:
                        return state, connection
            await self._wait_for_retry()

    def _probe_earlier(self, index: int, now: float) -> None:
        """Try receivers ahead of the one in use in the background, so traffic returns to them."""
        for state in self._states[:index]:
            if state.due(now):
                self._start_probe(state)

    def _start_probe(self, state: _State) -> None:
        probe = asyncio.create_task(self._probe(state))
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)

    async def _probe(self, state: _State) -> None:
        await self._open(state)

    async def _open(self, state: _State) -> ForwardError | None:
        """Connect ``state``'s receiver unless connected; None on success, else the error (recorded)."""
        async with state.lock:
            if state.live() is not None:
                return None
            connection = Connection(state.receiver, self._options)
            try:
                await connection.open()
            except ForwardError as error:
                if isinstance(error, HandshakeError):
                    self._metrics.handshake_failed(state.name)
                self._down(state, error)
                return error
            if self._closed:
                await connection.close()
                return ForwardError("forward pool closed")
            state.connection = connection
            state.last_error = None
            if state.ever_connected:
                self._metrics.reconnected(state.name)
            state.ever_connected = True
            state.up = True
            self._metrics.receiver_up(state.name, True)
            self._wake.set()
            return None

    def _lost(self, state: _State, connection: Connection, error: ForwardError | None) -> None:
        """A connection in use broke: mark its receiver down (once) so traffic moves on."""
        if state.connection is not connection:
            return  # another chunk on the same connection already reported it
        state.connection = None
        if isinstance(error, HandshakeError):
            self._metrics.handshake_failed(state.name)
        self._down(state, error or ForwardError(f"receiver {state.name}: connection closed"))

    def _down(self, state: _State, error: ForwardError) -> None:
        """Record a failure; the receiver is next tried after a backoff that doubles per failure in a row.

        Failures in a row reset only when a chunk gets through, so a receiver that accepts connections
        but never acknowledges keeps backing off instead of taking every chunk first.
        """
        state.failures += 1
        state.last_error = str(error)
        base = min(self._options.retry_max, self._options.retry_min * 2 ** (state.failures - 1))
        state.next_attempt = time.monotonic() + base * random.uniform(0.5, 1.0)
        if state.up or state.failures == 1:
            state.up = False
            self._metrics.receiver_up(state.name, False)

    async def _wait_for_retry(self) -> None:
        """Every receiver is down: sleep until the earliest retry, or until a probe connects one."""
        self._wake.clear()
        delay = max(0.0, min(s.next_attempt for s in self._states) - time.monotonic())
        if any(s.lock.locked() for s in self._states):
            delay = max(delay, 0.01)  # a connect is under way: let it finish
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
