"""Memory stays bounded whatever the application writes: a 64 MiB line, or 48 MiB that never get their newline.

With ``--max-line-bytes 1MiB`` the sidecar holds one shared buffer of about 1.5 MiB (resident only as far
as reads reached) and at most 1 MiB of pending partial line per file; a line longer than that is cut
into pieces that each end in ``\\n``. A follower that buffered the whole line would need its size in
memory; the peak resident memory (``VmHWM``) must stay under 60 MiB, which is less than the line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sidecar.core.tail import ReadBuffer
from tests.conftest import SidecarFactory, SidecarProcess, metric, peak_rss_kib, rss_kib, scrape
from tests.prom import free_port

MIB = 1024 * 1024
PEAK_LIMIT_KIB = 60 * 1024


def start(sidecar: SidecarFactory, path: Path) -> tuple[SidecarProcess, int]:
    port = free_port()
    sc = sidecar(path, "--max-line-bytes", "1MiB", "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    return sc, port


def wait_delivered_bytes(sc: SidecarProcess, port: int, count: int, timeout: float = 30.0) -> None:
    """Wait until ``sidecar_bytes_delivered_total`` reaches ``count`` (cheaper than reading the output)."""
    deadline = time.monotonic() + timeout
    while (done := metric(scrape(port), "sidecar_bytes_delivered_total")) < count:
        assert sc.running, sc.stderr()
        assert time.monotonic() < deadline, f"{done:.0f} of {count} bytes delivered after {timeout}s"
        time.sleep(0.1)


def assert_pieces_of(output: bytes, content: bytes) -> None:
    """``output`` is ``content`` cut into pieces of at most 1 MiB, each ended by a newline of ours."""
    pieces = output.split(b"\n")
    assert pieces.pop() == b""
    assert max(map(len, pieces)) <= MIB
    assert b"".join(pieces) == content


def feed(sidecar: SidecarFactory, log_dir: Path, first: bytes, then: bytes) -> tuple[int, bytes]:
    """Append ``first``; once all but its last MiB is out, note the peak memory and append ``then``.

    Returns the peak (KiB) and everything the sidecar wrote by the time it stopped.
    """
    path = log_dir / "app.log"
    path.write_bytes(b"")
    sc, port = start(sidecar, path)
    with path.open("ab", buffering=0) as app:
        app.write(first)
        wait_delivered_bytes(sc, port, len(first) - MIB)
        peak = peak_rss_kib(sc.proc.pid)
        app.write(then)
    wait_delivered_bytes(sc, port, len(first) + len(then) - 1)
    assert sc.stop() == 0
    return peak, sc.output()


def test_a_64_mib_line_comes_out_in_pieces_while_memory_stays_bounded(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    line = bytes(range(32, 127)) * (64 * MIB // 95)
    peak, output = feed(sidecar, log_dir, line + b"\n", b"")
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.1f} MiB for a {len(line) / MIB:.0f} MiB line"
    assert_pieces_of(output, line)


def test_a_partial_line_over_max_line_bytes_is_emitted_in_pieces_while_memory_stays_bounded(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """48 MiB without a newline: all but the last (at most 1 MiB) come out before the line ends."""
    partial = bytes(range(97, 123)) * (48 * MIB // 26)
    peak, output = feed(sidecar, log_dir, partial, b"the end\n")
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.1f} MiB with a {len(partial) / MIB:.0f} MiB partial line"
    assert_pieces_of(output, partial + b"the end")


def test_the_read_buffer_is_resident_only_as_far_as_reads_reached() -> None:
    """Quiet files need a few kilobytes of the 1.5 MiB buffer; a buffer zeroed when made would hold it all."""
    before = rss_kib(os.getpid())
    buffer = ReadBuffer(MIB, 512 * 1024)
    made = rss_kib(os.getpid())
    buffer.view[:MIB] = bytes(MIB)
    used = rss_kib(os.getpid())
    assert made - before < 256, f"a new read buffer made {made - before} KiB resident"
    assert used - made >= 900, "writing 1 MiB into the buffer should have made it resident"
