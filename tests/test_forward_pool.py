"""Failover, retries and at-least-once delivery of the pool, against real receivers that misbehave."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest

from sidecar.errors import ForwardError, HandshakeError
from sidecar.forward.client import ForwardOptions, Receiver
from sidecar.forward.pool import ForwardPool
from sidecar.forward.protocol import pack_line_entries
from tests.forward_receiver import ForwardReceiver

FAST = ForwardOptions(ack_timeout=0.3, connect_timeout=2.0, retry_min=0.05, retry_max=0.2)


class RecordingMetrics:
    """Counts every metrics call by (method, receiver port)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.records: Counter[tuple[str, int]] = Counter()

    def _note(self, method: str, receiver: str, records: int = 0) -> None:
        port = int(receiver.rsplit(":", 1)[1])
        self.calls[method, port] += 1
        self.records[method, port] += records

    def chunk_sent(self, receiver: str, records: int) -> None:
        self._note("sent", receiver, records)

    def chunk_acked(self, receiver: str, records: int, seconds: float) -> None:
        assert seconds >= 0
        self._note("acked", receiver, records)

    def chunk_retried(self, receiver: str, records: int) -> None:
        self._note("retried", receiver, records)

    def chunk_failed(self, receiver: str, records: int) -> None:
        self._note("failed", receiver, records)

    def receiver_up(self, receiver: str, up: bool) -> None:
        self._note("up" if up else "down", receiver)

    def reconnected(self, receiver: str) -> None:
        self._note("reconnected", receiver)

    def handshake_failed(self, receiver: str) -> None:
        self._note("handshake_failed", receiver)


def lines(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(count)]


async def send(pool: ForwardPool, batch: Sequence[bytes], compress: bool = False) -> None:
    entries, count = pack_line_entries(batch, 1_700_000_000_000_000_000)
    await pool.send_chunk("app.log", [entries], count, compress)


def with_pool(
    receivers: Sequence[ForwardReceiver],
    body: Callable[[ForwardPool], Awaitable[Any]],
    options: ForwardOptions = FAST,
    metrics: RecordingMetrics | None = None,
) -> Any:
    async def main() -> Any:
        pool = ForwardPool([Receiver("127.0.0.1", r.port) for r in receivers], options, metrics)
        try:
            return await asyncio.wait_for(body(pool), 20)
        finally:
            await pool.close()

    return asyncio.run(main())


def logged(receiver: ForwardReceiver) -> list[str]:
    return [event.record["log"] for event in receiver.events()]


@pytest.fixture
def stopped_receiver() -> Iterator[ForwardReceiver]:
    """A receiver whose port is free (nothing listens) until the test starts it."""
    receiver = ForwardReceiver()
    receiver.start()
    receiver.stop()
    yield receiver
    receiver.stop()


def test_chunk_is_acknowledged_and_counted() -> None:
    metrics = RecordingMetrics()
    with ForwardReceiver() as receiver:
        with_pool([receiver], lambda pool: send(pool, lines("a", 3)), metrics=metrics)
        assert logged(receiver) == ["a-0", "a-1", "a-2"]
    port = receiver.port
    assert metrics.records["sent", port] == metrics.records["acked", port] == 3
    assert metrics.calls["up", port] == 1
    assert metrics.calls["failed", port] == 0


def test_second_receiver_takes_traffic_while_first_is_down_and_first_gets_it_back(
    stopped_receiver: ForwardReceiver,
) -> None:
    first, metrics = stopped_receiver, RecordingMetrics()
    with ForwardReceiver() as second:

        async def body(pool: ForwardPool) -> None:
            await send(pool, [b"while-down"])
            assert pool.not_ready_reason() is None
            assert [s.up for s in pool.status()] == [False, True]
            assert "cannot connect" in (pool.status()[0].last_error or "")
            first.start()
            for i in range(200):  # the background probe brings the first back within the backoff
                await send(pool, [f"after-{i}".encode()])
                if logged(first):
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("traffic never returned to the first receiver")

        with_pool([first, second], body, metrics=metrics)
        assert logged(second)[0] == "while-down"
        assert len(logged(first)) == 1
        assert metrics.calls["down", first.port] == 1
        assert metrics.calls["up", first.port] == 1


def test_missing_ack_is_resent_to_the_next_receiver_with_the_same_chunk_id() -> None:
    metrics = RecordingMetrics()
    with ForwardReceiver(ack_mode="never") as silent, ForwardReceiver() as healthy:
        with_pool([silent, healthy], lambda pool: send(pool, [b"important"]), metrics=metrics)
        assert logged(silent) == logged(healthy) == ["important"]
        assert silent.messages[0].option == healthy.messages[0].option
        assert metrics.calls["failed", silent.port] == 1
        assert metrics.calls["retried", healthy.port] == 1


def test_garbage_reply_makes_the_chunk_go_to_the_next_receiver() -> None:
    with ForwardReceiver(ack_mode="garbage") as broken, ForwardReceiver() as healthy:
        with_pool([broken, healthy], lambda pool: send(pool, [b"x"]))
        assert logged(healthy) == ["x"]
        assert "not msgpack" in (with_pool([broken], status_after_one_failure) or "")


async def status_after_one_failure(pool: ForwardPool) -> str | None:
    task = asyncio.create_task(send(pool, [b"y"]))
    while pool.status()[0].last_error is None:
        await asyncio.sleep(0.01)
    task.cancel()
    return pool.status()[0].last_error


def test_receiver_restarted_mid_stream_loses_nothing() -> None:
    with ForwardReceiver() as receiver:

        async def body(pool: ForwardPool) -> None:
            async def sender(worker: int) -> None:
                for i in range(30):
                    await send(pool, lines(f"w{worker}-{i}", 5))

            senders = [asyncio.create_task(sender(w)) for w in range(4)]
            while len(receiver.events()) < 150:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(receiver.stop)
            await asyncio.sleep(0.1)
            await asyncio.to_thread(receiver.start)
            await asyncio.gather(*senders)

        with_pool([receiver], body)
        expected = {f"w{w}-{i}-{j}" for w in range(4) for i in range(30) for j in range(5)}
        assert set(logged(receiver)) == expected
        assert receiver.connections >= 2


def test_connection_dropped_by_receiver_is_resent() -> None:
    with ForwardReceiver(close_after=2) as receiver:

        async def body(pool: ForwardPool) -> None:
            for i in range(5):
                await send(pool, [f"n{i}".encode()])

        with_pool([receiver], body)
        assert logged(receiver) == [f"n{i}" for i in range(5)]
        assert receiver.connections == 2


def test_gzip_chunks_are_delivered_compressed_when_asked_per_chunk() -> None:
    async def body(pool: ForwardPool) -> None:
        await send(pool, lines("z", 100), compress=True)
        await send(pool, [b"plain"])

    with ForwardReceiver() as receiver:
        with_pool([receiver], body)
        assert [m.mode for m in receiver.messages] == ["CompressedPackedForward", "PackedForward"]
        assert logged(receiver) == [*(f"z-{i}" for i in range(100)), "plain"]


def test_without_ack_chunks_are_sent_and_not_waited_for() -> None:
    options = ForwardOptions(require_ack=False)
    with ForwardReceiver(ack_mode="never") as receiver:
        with_pool([receiver], lambda pool: send(pool, [b"fire-and-forget"]), options=options)
        receiver.wait_for(1)
        assert receiver.messages[0].option == {"size": 1}


def test_wrong_shared_key_surfaces_on_connect_and_is_counted() -> None:
    metrics = RecordingMetrics()
    options = ForwardOptions(shared_key="wrong", retry_min=0.05)
    with ForwardReceiver(shared_key="right") as receiver:

        async def body(pool: ForwardPool) -> str | None:
            with pytest.raises(HandshakeError, match=f"127.0.0.1:{receiver.port}: .*shared_key mismatch"):
                await pool.connect()
            return pool.not_ready_reason()

        reason = with_pool([receiver], body, options=options, metrics=metrics)
    assert reason is not None
    assert reason.startswith("no Forward receiver connected")
    assert metrics.calls["handshake_failed", receiver.port] == 1


def test_closing_the_pool_fails_chunks_waiting_for_a_receiver(stopped_receiver: ForwardReceiver) -> None:
    async def body(pool: ForwardPool) -> None:
        task = asyncio.create_task(send(pool, [b"never"]))
        await asyncio.sleep(0.2)
        await pool.close()
        with pytest.raises(ForwardError, match="pool closed"):
            await task

    with_pool([stopped_receiver], body)


def test_connection_closed_while_idle_is_seen_down_and_reconnected_without_a_chunk() -> None:
    metrics = RecordingMetrics()
    with ForwardReceiver() as receiver:

        async def body(pool: ForwardPool) -> None:
            await pool.connect()
            await asyncio.to_thread(receiver.wait_until, lambda r: r.connections == 1)  # it knows us
            await asyncio.to_thread(receiver.stop)  # restarts while nothing is being sent
            while pool.not_ready_reason() is None:
                await asyncio.sleep(0.01)
            pool.keep_connected()
            assert metrics.calls["down", receiver.port] == 1
            assert "receiver closed the connection" in (pool.status()[0].last_error or "")
            await asyncio.to_thread(receiver.start)
            while pool.not_ready_reason() is not None:  # reconnected by the upkeep alone
                pool.keep_connected()
                await asyncio.sleep(0.02)

        with_pool([receiver], body, metrics=metrics)
        assert receiver.connections == 2
        assert receiver.messages == []
    assert metrics.calls["reconnected", receiver.port] == 1


def test_send_chunk_lets_go_of_the_pieces_before_the_ack_so_a_chunk_in_flight_is_held_once() -> None:
    with ForwardReceiver(ack_mode="never") as receiver:

        async def body(pool: ForwardPool) -> None:
            pieces = [pack_line_entries([b"one"], 1)[0], pack_line_entries([b"two"], 2)[0]]
            task = asyncio.create_task(pool.send_chunk("app.log", pieces, 2))
            await asyncio.to_thread(receiver.wait_for, 2)
            assert not task.done()  # not acknowledged...
            assert pieces == []  # ...and the pieces are already dropped: only the packed message is kept
            task.cancel()

        with_pool([receiver], body)
        assert logged(receiver) == ["one", "two"]


def test_chunks_written_again_after_a_broken_connection_keep_the_order_they_were_handed_over() -> None:
    with ForwardReceiver(close_after=3) as receiver:

        async def body(pool: ForwardPool) -> None:
            await asyncio.gather(*(send(pool, [b"c%d" % i]) for i in range(12)))

        with_pool([receiver], body)
        first_arrivals = list(dict.fromkeys(logged(receiver)))
        assert first_arrivals == [f"c{i}" for i in range(12)]
        assert receiver.connections == 2
