"""Fluent Bit as a real receiver and as the sender to compare with, when ``FLUENT_BIT`` names its binary.

Fluent Bit is in no package registry, so the bench never installs it: ``FLUENT_BIT=/path/to/fluent-bit
make bench`` (a release build, as the interop check uses) turns on the comparison.

The receiver is ``in_forward`` into the ``counter`` output (flushed every 50 ms), which prints the running
total; it prints with stdio, block-buffered into a pipe, so it runs under ``stdbuf -oL`` (coreutils) to show
each line at once. The HTTP metrics endpoint (``/api/v1/metrics``) is refreshed only once a second, too
coarse to time a run of a few seconds, so it serves only as the final check: ``in_forward`` took in as many
records as ``counter`` counted, none dropped. The sender's ``out_forward`` ``proc_records`` counts records
whose chunk was acknowledged (with ``Require_ack_response`` a chunk is done only on its ack),
``retried_records`` those sent again.

The sender does the same job as ``sidecar agent`` with its defaults, set up to do it as fast as it can:

- ``in_tail`` reads 1 MiB at a time with lines up to 1 MiB (``Buffer_Chunk_Size``/``Buffer_Max_Size``
  ``1M``), as our reader does (``--max-line-bytes 1MiB``, 1 MiB reads).
- ``DB`` on (a fresh file on tmpfs each run): we always keep a checkpoint, so Fluent Bit keeps its offsets.
- ``Path_Key file``: our records carry the file's path under ``file``, so both ship the same records.
- ``Read_from_Head`` on; ``Refresh_Interval 1`` so that it finds the backlog, moved in after its start, within
  a second like our inotify (the time before it opens the file is not counted either way).
- Buffers in memory (``storage.type memory``, no ``storage.path``); ``out_forward`` workers as by default.
- ``Mem_Buf_Limit 32M`` and ``Flush 0.2``: the fastest of a sweep on this 2-core machine (4M lines, two runs
  each, lines/s): no limit 300k at ``Flush`` 1, 0.2 or 0.1 (and ~800 MiB RSS: it reads the whole backlog
  into memory); 64M 300k / 370k / 320k; 32M 150k / 500k / 480k (0.05 s: 420k); 16M at 0.1 s 455k. A
  limit of 32M is still four times what we keep in flight (``--max-in-flight`` 4 x ``--chunk-bytes`` 2 MiB);
  a larger one lets bursts pile up at the receiver, which then spends about twice the CPU per record.
  Fluent Bit's default ``Flush`` is 1 s; ours sends each chunk once full (and at least every 1 s).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.followers import BenchError, LineReader, log_tail
from bench.forward_sink import RunningTotal
from bench.scrape_load import free_port
from bench.workload import fresh_dir

ENV = "FLUENT_BIT"
_START_TIMEOUT = 30.0
_POLL = 0.01
_COUNTER = re.compile(rb"^[\d.]+,\d+ \(total = (\d+)\)")


def binary() -> str | None:
    """The Fluent Bit binary ``FLUENT_BIT`` names, or ``None`` when unset; a wrong path is an error."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if not os.access(path, os.X_OK):
        raise BenchError(f"{ENV}={path} is not an executable Fluent Bit binary; unset it or fix the path")
    return path


def scrape(port: int, path: str) -> bytes | None:
    """The body of ``GET path`` on a loopback port, or ``None`` while nothing answers there."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return None
    finally:
        conn.close()
    return body if response.status == 200 else None


def metrics(port: int) -> dict[str, Any] | None:
    """Fluent Bit's ``/api/v1/metrics`` (``{"input": {...}, "output": {...}}``), ``None`` before it listens."""
    body = scrape(port, "/api/v1/metrics")
    return None if body is None else dict(json.loads(body))


def _service(metrics_port: int, flush: str) -> str:
    return f"""[SERVICE]
    Flush        {flush}
    Log_Level    warn
    HTTP_Server  On
    HTTP_Listen  127.0.0.1
    HTTP_Port    {metrics_port}
"""


def receiver_config(port: int, metrics_port: int) -> str:
    """``in_forward`` with buffers well above any chunk either sender makes, counted every 50 ms."""
    return _service(metrics_port, "0.05") + f"""
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


def sender_config(glob: Path, db: Path, port: int, metrics_port: int) -> str:
    """``in_tail`` -> ``out_forward`` with acks, set up as the module docstring says."""
    return _service(metrics_port, "0.2") + f"""
[INPUT]
    Name              tail
    Path              {glob}
    Read_from_Head    true
    Refresh_Interval  1
    Buffer_Chunk_Size 1M
    Buffer_Max_Size   1M
    DB                {db}
    Path_Key          file
    storage.type      memory
    Mem_Buf_Limit     32M

[OUTPUT]
    Name                 forward
    Match                *
    Host                 127.0.0.1
    Port                 {port}
    Require_ack_response true
"""


def sender_argv(fluent_bit: str, work: Path, glob: Path, port: int, metrics_port: int) -> list[str]:
    """The sender's command line; its config and a fresh ``DB`` go into new files under ``work``."""
    run_dir = fresh_dir(work, "fluent-bit-sender-")
    config = run_dir / "sender.conf"
    config.write_text(sender_config(glob, run_dir / "tail.db", port, metrics_port))
    return [fluent_bit, "-c", str(config)]


def sender_delivered(metrics_port: int) -> tuple[int, int] | None:
    """``(records acknowledged, records sent again)`` by the sender's ``out_forward``; ``None`` if silent."""
    got = metrics(metrics_port)
    if got is None:
        return None
    forward = got["output"]["forward.0"]
    return int(forward["proc_records"]), int(forward["retried_records"])


class Receiver:
    """A fresh Fluent Bit ``in_forward`` receiver: timed by its ``counter`` output, confirmed by its metrics."""

    def __init__(self, fluent_bit: str, work: Path) -> None:
        self.port = free_port()
        self._metrics_port = free_port()
        config = fresh_dir(work, "fluent-bit-receiver-") / "receiver.conf"
        config.write_text(receiver_config(self.port, self._metrics_port))
        self._log = work / "receiver.stderr"
        with self._log.open("ab") as err:
            argv = ["stdbuf", "-oL", fluent_bit, "-c", str(config)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        reader = LineReader(self.proc, "Fluent Bit receiver", self._log)
        self._total = RunningTotal(reader, self.proc.stdout.fileno(), _COUNTER)
        deadline = time.monotonic() + _START_TIMEOUT
        while self._metrics() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"Fluent Bit receiver not answering on {self._metrics_port}: {log_tail(self._log)}")
            time.sleep(_POLL)

    def _metrics(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise BenchError(f"Fluent Bit receiver exited ({self.proc.returncode}): {log_tail(self._log)}")
        return metrics(self._metrics_port)

    def records(self) -> int:
        """Records through ``in_forward`` (which acked them) into ``counter`` so far."""
        return self._total.read()

    def final(self, deadline: float) -> int:
        """Records received in all, once the counter held still and the metrics agree with it; drops fail."""
        counted = self._total.settled(deadline)
        while True:
            got = self._metrics()
            if got is not None:
                received = int(got["input"]["forward.0"]["records"])
                output = got["output"]["counter.0"]
                if output["dropped_records"]:
                    raise BenchError(f"Fluent Bit receiver dropped {output['dropped_records']:,} records")
                if received == output["proc_records"] == counted:
                    return counted
            if time.monotonic() > deadline:
                raise BenchError(f"Fluent Bit receiver: counter says {counted:,}, metrics {got}")
            time.sleep(_POLL * 10)
