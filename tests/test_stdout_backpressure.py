"""Stream mode behind a reader that stops: the kernel's pipe is where delivery ends, and the files are the buffer.

stdout is a real pipe that nobody reads (``stdout="held"``), as when ``kubectl logs`` or the node's agent
stalls. The sidecar enlarges the pipe to 1 MiB, fills it, and must then wait: its checkpoint may only
hold what the kernel took, it must not read ahead into memory, and it must still notice rotations, open
new files and write checkpoints, so that nothing is lost once the reader comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import (
    SidecarFactory,
    metric,
    peak_rss_kib,
    scrape,
    state_offset,
    wait_for_checkpoint,
)
from tests.prom import free_port
from tests.writer import LogWriter

MIB = 1024 * 1024
PIPE = MIB
"""What the sidecar enlarges a stdout pipe to."""
READ_AHEAD_BOUND = PIPE + 2 * MIB
"""The pipe, the batch the sink is stuck in (one read of at most 1 MiB) and one more read."""
PEAK_LIMIT_KIB = 60 * 1024


def test_checkpoint_holds_only_what_the_stdout_pipe_took_from_a_reader_that_stopped(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    writer = LogWriter(log_dir / "app.log")
    writer.write(50_000)  # ~5.5 MiB, five times the pipe
    sc = sidecar(writer.path, stdout="held")
    in_pipe = sc.wait_stdout_stalled()
    assert in_pipe <= PIPE
    wait_for_checkpoint(checkpoint_dir, writer.path, 1)
    for _ in range(10):  # over five checkpoint intervals, each state file must stay within the pipe
        offset = state_offset(checkpoint_dir, writer.path)
        assert 0 < offset <= sc.stdout_pending(), f"checkpoint at {offset}, stdout took {sc.stdout_pending()}"
        time.sleep(0.1)
    sc.release_stdout()
    sc.wait_delivered({"app": writer.written})
    wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
    assert sc.stop() == 0
    assert sc.output() == writer.path.read_bytes()
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_stalled_reader_stops_read_ahead_while_rotations_and_new_files_are_still_handled(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """With a 22 MiB backlog behind the pipe: reading stops at the pipe's worth, memory stays flat, and a
    rename, a new file and the state file's entries for them all happen while the reader is away."""
    app = LogWriter(log_dir / "app.log")
    app.write(200_000)
    port = free_port()
    sc = sidecar(f"{log_dir}/*.log", "--metrics-port", str(port), "--metrics-address", "127.0.0.1", stdout="held")
    sc.wait_stdout_stalled()
    read = metric(scrape(port), "sidecar_bytes_read_total")
    assert 0 < read <= READ_AHEAD_BOUND
    renamed = log_dir / "app.log.1"
    app.rename_rotate(renamed, late_lines=100)
    app.write(100)
    other = LogWriter(log_dir / "b.log", "b")
    other.write(100)
    sc.wait_stderr(f"event=file_rotated path={app.path} kind=rename")
    wait_for_checkpoint(checkpoint_dir, other.path, 0)
    wait_for_checkpoint(checkpoint_dir, app.path, 0)  # the new app.log, opened so its data stays reachable
    samples = scrape(port)
    assert metric(samples, "sidecar_files_rotated_total", kind="rename") == 1
    assert metric(samples, "sidecar_files_opened_total") == 3
    assert metric(samples, "sidecar_bytes_read_total") == read, "read ahead while stdout was stalled"
    assert metric(samples, "sidecar_lag_bytes") > 20 * MIB
    assert state_offset(checkpoint_dir, renamed) <= PIPE
    peak = peak_rss_kib(sc.proc.pid)
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.1f} MiB"
    sc.release_stdout()
    sc.wait_delivered({"app": app.written, "b": other.written}, timeout=30)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": app.written, "b": other.written}, files={"app": app.files})
