"""``sidecar agent --compress gzip`` against a receiver that decompresses like Fluent Bit (issue 13).

Fluent Bit's in_forward (v4.2.8) decompresses a CompressedPackedForward chunk in pieces of its
``Buffer_Chunk_Size`` (1,024,000 bytes by default), loses the records that straddle two pieces and
acknowledges the chunk all the same: at-least-once is lost without any error. The test receiver's
``buffer_chunk_size`` behaves the same way, so these tests count what such a receiver keeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--chunk-bytes", "0"), {}), (("--chunk-bytes", "1GiB"), {}), ((), {"SIDECAR_CHUNK_BYTES": "100"})],
    ids=["zero", "huge", "env"],
)
def test_chunk_bytes_out_of_its_range_is_one_error_line_naming_it_and_exit_code_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    command = [sys.executable, "-m", "sidecar", "agent", str(tmp_path / "*.log"), "--checkpoint-dir", str(tmp_path)]
    command += ["--fluentd-host", "127.0.0.1", "--metrics-port", "0", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env={**os.environ, **env})
    assert done.returncode == 2, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "'--chunk-bytes'" in error
    assert error.endswith("is out of range: give a size from 1KiB to 64MiB")
