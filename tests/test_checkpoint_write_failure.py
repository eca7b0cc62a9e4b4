"""A checkpoint write that fails at run time (disk full, volume gone) is one line on stderr, counted and
retried, and the lines keep flowing; once writing works again the state file catches up.

Tests run as root, so permissions cannot make the write fail: a non-empty directory takes the state
file's name, so that replacing it (the last step of every write) fails with EISDIR until it is removed.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory, metric, scrape, wait_for_checkpoint
from tests.prom import free_port
from tests.writer import LogWriter


def test_failing_checkpoint_writes_are_one_stderr_line_counted_and_retried_while_lines_flow(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    writer = LogWriter(log_dir / "app.log")
    writer.write(10)
    port = free_port()
    sc = sidecar(writer.path, "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    sc.wait_delivered({"app": writer.written})
    wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
    state = checkpoint_dir / "sidecar-state.json"
    state.unlink()
    state.mkdir()
    (state / "in-the-way").write_bytes(b"")
    try:
        writer.write(50)
        sc.wait_stderr("event=checkpoint_failed")
        deadline = time.monotonic() + 15
        while metric(scrape(port), "sidecar_checkpoint_write_failures_total") < 3:  # retried every interval
            assert time.monotonic() < deadline, f"checkpoint writes not retried\n{sc.stderr()}"
            time.sleep(0.1)
        writer.write(50)
        sc.wait_delivered({"app": writer.written})
        assert sc.running
    finally:
        (state / "in-the-way").unlink()
        state.rmdir()
    failures = [line for line in sc.stderr().splitlines() if "checkpoint_failed" in line]
    assert len(failures) == 1, failures
    assert "sidecar-state.json" in failures[0]
    sc.wait_stderr("event=checkpoint_recovered")
    wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})
