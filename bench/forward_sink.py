"""A minimal, fast Forward receiver for throughput runs: it counts records and acks, nothing more.

The test suite's ``tests/forward_receiver.py`` decodes and keeps every event, which is right for
checking a sender but makes it the bottleneck (and a memory hog) at millions of lines. This one reads
only each message's outer array and option map: the record count comes from the ``size`` option of
(Compressed)PackedForward (entries are counted only when it is absent), and ``{"ack": chunk}`` goes
back at once. It runs as its own process (``python -m bench.forward_sink``) so its CPU is reported
apart from the sender's. No handshake, no TLS.

Protocol on stdout: ``PORT <n>`` when listening, then ``RECORDS <n>`` with the total so far after every
event message (a few hundred lines for millions of records: one per chunk). Records beyond those
written are resends. :class:`Sink` starts it from the bench and reads that total; :class:`RunningTotal` is
shared with the Fluent Bit receiver, whose ``counter`` output prints its own.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

from bench.followers import BenchError, LineReader
from bench.workload import REPO

_RECV = 1 << 20
_RECORDS = re.compile(rb"^RECORDS (\d+)")
_START_TIMEOUT = 60.0
_SETTLE = 0.5


class _Counter:
    """The record total over all connections, announced after every message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records = 0

    def add(self, records: int) -> None:
        with self._lock:
            self._records += records
            _say(f"RECORDS {self._records}")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _fail(reason: str) -> None:
    """End the whole process (from any thread): the bench sees it exit, with the reason."""
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
                counter.add(records)


class RunningTotal:
    """A receiver's running record total: the last number ``pattern`` (group 1) found on its stdout."""

    def __init__(self, reader: LineReader, stdout: int, pattern: re.Pattern[bytes]) -> None:
        self._reader, self._stdout, self._pattern = reader, stdout, pattern
        self.total = 0

    def read(self) -> int:
        """The total as of now, from whatever the receiver printed since; never waits."""
        while select.select([self._stdout], [], [], 0)[0]:
            for line in self._reader.next_lines(time.monotonic() + 1.0, "its running total")[0]:
                match = self._pattern.match(line)
                if match:
                    self.total = int(match.group(1))
        return self.total

    def settled(self, deadline: float) -> int:
        """The total once it held still for a while (the sender has stopped)."""
        before = -1
        while (total := self.read()) != before:
            if time.monotonic() > deadline:
                raise BenchError(f"receiver still counting at the deadline ({total:,} records)")
            before = total
            time.sleep(_SETTLE)
        return total


class Sink:
    """This receiver in its own process, as the bench starts it."""

    def __init__(self, work: Path) -> None:
        log = work / "receiver.stderr"
        with log.open("ab") as err:
            argv = [sys.executable, "-m", "bench.forward_sink"]
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        reader = LineReader(self.proc, "forward_sink", log)
        first = reader.next_lines(time.monotonic() + _START_TIMEOUT, "no PORT line")[0]
        self.port = int(first[0].split()[1])
        self._total = RunningTotal(reader, self.proc.stdout.fileno(), _RECORDS)

    def records(self) -> int:
        """Records counted (and acked) so far."""
        return self._total.read()

    def final(self, deadline: float) -> int:
        """Records received in all, once the count held still."""
        return self._total.settled(deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    counter = _Counter()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    with socket.create_server(("127.0.0.1", args.port)) as server:
        _say(f"PORT {server.getsockname()[1]}")
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_serve, args=(conn, counter), daemon=True).start()


if __name__ == "__main__":
    main()
