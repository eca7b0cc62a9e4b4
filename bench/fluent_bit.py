"""Fluent Bit as a real receiver and as the sender to compare with, when ``FLUENT_BIT`` names its binary.

Fluent Bit is in no package registry, so the bench never installs it: ``FLUENT_BIT=/path/to/fluent-bit
make bench`` (a release build, as the interop check uses) turns on the comparison. The receiver is
``in_forward`` into the ``counter`` output, which prints ``<time>,<records> (total = <all so far>)``
at every flush; the competing sender is ``in_tail`` from the head into ``out_forward`` with
``Require_ack_response``, the closest Fluent Bit comes to our at-least-once shipping.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

from bench.followers import BenchError, LineReader, log_tail

ENV = "FLUENT_BIT"
_TOTAL = re.compile(rb"^[\d.]+,\d+ \(total = (\d+)\)")
_LISTEN_TIMEOUT = 30.0


def binary() -> str | None:
    """The Fluent Bit binary ``FLUENT_BIT`` names, or ``None`` when unset; a wrong path is an error."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if not os.access(path, os.X_OK):
        raise BenchError(f"{ENV}={path} is not an executable Fluent Bit binary; unset it or fix the path")
    return path


def receiver_config(port: int) -> str:
    """``in_forward`` with buffers well above any chunk either sender makes, counted every 0.1 s."""
    return f"""[SERVICE]
    Flush     0.1
    Log_Level warn

[INPUT]
    Name              forward
    Listen            127.0.0.1
    Port              {port}
    Buffer_Chunk_Size 8M
    Buffer_Max_Size   64M

[OUTPUT]
    Name  counter
    Match *
"""


def sender_config(backlog: Path, port: int) -> str:
    """``in_tail`` from the head with 1 MiB buffers (the field notes' fastest), shipping with acks."""
    return f"""[SERVICE]
    Flush     1
    Log_Level warn

[INPUT]
    Name              tail
    Path              {backlog}
    Read_from_Head    true
    Buffer_Chunk_Size 1M
    Buffer_Max_Size   1M

[OUTPUT]
    Name                 forward
    Match                *
    Host                 127.0.0.1
    Port                 {port}
    Require_ack_response true
"""


class Receiver:
    """A running Fluent Bit receiver and what its counter said so far."""

    def __init__(self, fluent_bit: str, work: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        config = work / "receiver.conf"
        config.write_text(receiver_config(self.port))
        self._log = work / "receiver.stderr"
        with self._log.open("ab") as err:
            self.proc = subprocess.Popen([fluent_bit, "-c", str(config)], stdout=subprocess.PIPE, stderr=err)
        self._reader = LineReader(self.proc, "Fluent Bit receiver", self._log)
        self.total = 0
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + _LISTEN_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"Fluent Bit receiver exited: {log_tail(self._log)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"Fluent Bit receiver not listening on {self.port}: {log_tail(self._log)}")

    def wait_total(self, records: int, deadline: float) -> int:
        """Block until the counter reached ``records``; ``CLOCK_MONOTONIC`` ns of the line that said so."""
        while True:
            lines, now = self._reader.next_lines(deadline, f"counter total {self.total} of {records}")
            for line in lines:
                match = _TOTAL.match(line)
                if match:
                    self.total = int(match.group(1))
            if self.total >= records:
                return now


def sender_argv(fluent_bit: str, backlog: Path, work: Path, port: int) -> list[str]:
    config = work / "sender.conf"
    config.write_text(sender_config(backlog, port))
    return [fluent_bit, "-c", str(config)]
