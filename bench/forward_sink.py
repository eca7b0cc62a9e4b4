"""A minimal, fast Forward receiver for throughput runs: it counts records and acks, nothing more.

The test suite's ``tests/forward_receiver.py`` decodes and keeps every event, which is right for
checking a sender but makes it the bottleneck (and a memory hog) at millions of lines. This one reads
only each message's outer array and option map: the record count comes from the ``size`` option of
(Compressed)PackedForward (entries are counted only when it is absent), and ``{"ack": chunk}`` goes
back at once. It runs as its own process (``python -m bench.forward_sink``) so its CPU is reported
apart from the sender's. No handshake, no TLS.

Protocol on stdout: ``PORT <n>`` when listening; ``FIRST <ns>`` at the first event message;
``DONE <records> <ns>`` once ``--expected`` records arrived; ``TOTAL <records> <messages> <acks>``
at SIGTERM (records beyond the expected ones are resends).
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import msgpack

_RECV = 1 << 20


class _Counter:
    """Totals over all connections; announces the first message and the expected count once each."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self._expected = expected
        self.records = 0
        self.messages = 0
        self.acks = 0

    def add(self, records: int, acked: bool) -> None:
        with self._lock:
            if self.messages == 0:
                _say(f"FIRST {time.monotonic_ns()}")
            before = self.records
            self.records += records
            self.messages += 1
            self.acks += acked
            if before < self._expected <= self.records:
                _say(f"DONE {self.records} {time.monotonic_ns()}")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _fail(reason: str) -> None:
    """End the whole process (from any thread): the bench sees it exit before DONE, with the reason."""
    sys.stderr.write(f"forward_sink: {reason}\n")
    sys.stderr.flush()
    os._exit(2)


def _records(message: Any, trust_size: bool) -> tuple[int, dict[bytes, Any]]:
    """How many records an event message carries, and its option map (empty when none).

    Without ``trust_size`` the entries of a packed message are counted even when ``size`` is given,
    and a ``size`` that disagrees is an error (checked on each connection's first message, so that a
    sender cannot look fast by announcing more records than it sends).
    """
    body = message[1]
    if isinstance(body, bytes):  # (Compressed)PackedForward; raw=True also turns str into bytes
        option = message[2] if len(message) > 2 else {}
        size = option.get(b"size")
        if isinstance(size, int) and trust_size:
            return size, option
        payload = gzip.decompress(body) if option.get(b"compressed") == b"gzip" else body
        unpacker = msgpack.Unpacker(raw=True, use_list=False)
        unpacker.feed(payload)
        count = sum(1 for _ in unpacker)
        if size is not None and size != count:
            _fail(f"option size {size} but {count} entries")
        return count, option
    if isinstance(body, tuple):  # Forward
        return len(body), message[2] if len(message) > 2 else {}
    return 1, message[3] if len(message) > 3 else {}  # Message


def _serve(conn: socket.socket, counter: _Counter) -> None:
    unpacker = msgpack.Unpacker(raw=True, use_list=False, max_buffer_size=256 << 20)
    checked = False
    with conn:
        while data := conn.recv(_RECV):
            unpacker.feed(data)
            for message in unpacker:
                records, option = _records(message, trust_size=checked)
                checked = True
                chunk = option.get(b"chunk")
                if chunk is not None:
                    conn.sendall(msgpack.packb({"ack": chunk}, use_bin_type=False))
                counter.add(records, chunk is not None)


def command(expected: int) -> list[str]:
    """The argv that starts this receiver (run it with ``cwd=REPO``)."""
    return [sys.executable, "-m", "bench.forward_sink", "--expected", str(expected)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expected", type=int, required=True, help="records to wait for before DONE")
    args = parser.parse_args()
    counter = _Counter(args.expected)

    def stop(_signum: int, _frame: object) -> None:
        _say(f"TOTAL {counter.records} {counter.messages} {counter.acks}")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with socket.create_server(("127.0.0.1", args.port)) as server:
        _say(f"PORT {server.getsockname()[1]}")
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_serve, args=(conn, counter), daemon=True).start()


if __name__ == "__main__":
    main()
