"""``sidecar agent --compress gzip`` against a receiver that decompresses like Fluent Bit (issue 13).

Fluent Bit's in_forward (v4.2.8) decompresses a CompressedPackedForward chunk in pieces of its
``Buffer_Chunk_Size`` (1,024,000 bytes by default), loses the records that straddle two pieces and
acknowledges the chunk all the same: at-least-once is lost without any error. The test receiver's
``buffer_chunk_size`` behaves the same way, so these tests count what such a receiver keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.modes.agent.sink import FLUENT_BIT_PIECE
from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.forward_receiver import ForwardReceiver, as_bytes
from tests.writer import LogWriter


@pytest.fixture
def fluent_bit_like() -> Iterator[ForwardReceiver]:
    with ForwardReceiver(buffer_chunk_size=FLUENT_BIT_PIECE) as running:
        yield running


def agent(sidecar: SidecarFactory, log_dir: Path, receiver: ForwardReceiver, *args: str) -> SidecarProcess:
    return sidecar(
        str(log_dir / "*.log"),
        "--fluentd-host",
        "127.0.0.1",
        "--fluentd-port",
        str(receiver.port),
        "--compress",
        "gzip",
        *args,
        mode="agent",
    )


def received(receiver: ForwardReceiver) -> bytes:
    return b"".join(as_bytes(e.record["log"]) + b"\n" for e in receiver.events())


def dropped(receiver: ForwardReceiver) -> int:
    return sum(m.dropped for m in receiver.messages)


def test_default_gzip_chunks_reach_a_fluent_bit_like_receiver_whole(
    sidecar: SidecarFactory, log_dir: Path, fluent_bit_like: ForwardReceiver
) -> None:
    writer = LogWriter(log_dir / "app.log")
    writer.write(40_000)  # ~8 MiB of entries: the old 2 MiB chunks each lost their straddling records
    proc = agent(sidecar, log_dir, fluent_bit_like)
    fluent_bit_like.wait_until(lambda r: len(r.events()) + dropped(r) >= 40_000, timeout=60)
    assert proc.stop() == 0
    assert dropped(fluent_bit_like) == 0
    report = check(received(fluent_bit_like), {"app": writer.written})
    assert report.ok, report.summary()
    assert {m.mode for m in fluent_bit_like.messages} == {"CompressedPackedForward"}


def test_a_line_over_chunk_bytes_goes_alone_uncompressed_and_arrives_whole(
    sidecar: SidecarFactory, log_dir: Path
) -> None:
    big = b"big " + b"B" * 200_000
    path = log_dir / "app.log"
    path.write_bytes(b"small one\n" + big + b"\nsmall two\n")
    with ForwardReceiver(buffer_chunk_size=64 * 1024) as receiver:
        proc = agent(sidecar, log_dir, receiver, "--chunk-bytes", "64KiB", "--max-line-bytes", "1MiB")
        receiver.wait_until(lambda r: len(r.events()) >= 3, timeout=20)
        assert proc.stop() == 0
        assert received(receiver) == b"small one\n" + big + b"\nsmall two\n"
        alone = [m for m in receiver.messages if m.entries[0][1]["log"].startswith("big")]
        assert [(m.mode, len(m.entries)) for m in alone] == [("PackedForward", 1)]
    assert "record_over_chunk_bytes" in proc.stderr()


def test_gzip_chunk_bytes_over_fluent_bits_default_piece_is_warned_at_start(
    sidecar: SidecarFactory, log_dir: Path, fluent_bit_like: ForwardReceiver
) -> None:
    proc = agent(sidecar, log_dir, fluent_bit_like, "--chunk-bytes", "2MiB")
    proc.wait_stderr("chunk_bytes_over_fluent_bit_default")
    assert proc.stop() == 0


@pytest.mark.parametrize("size", ["0", "100", "1GiB"])
def test_chunk_bytes_outside_its_range_is_one_line_on_stderr_and_exit_code_2(
    sidecar: SidecarFactory, log_dir: Path, fluent_bit_like: ForwardReceiver, size: str
) -> None:
    proc = sidecar(
        str(log_dir / "*.log"),
        "--fluentd-host",
        "127.0.0.1",
        "--fluentd-port",
        str(fluent_bit_like.port),
        "--chunk-bytes",
        size,
        mode="agent",
        ready=False,
    )
    assert proc.wait() == 2
    err = proc.runs[-1].stderr_path.read_text().strip()
    assert len(err.splitlines()) == 1
    assert "--chunk-bytes" in err
    assert "1KiB and 64MiB" in err
