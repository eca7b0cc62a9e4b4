"""Letting go: descriptors of rotated-away files are closed, saved positions of files long gone are dropped,
and a rotated file the sink cannot take is given up after ``--rotate-wait-max``, counted.

A sidecar that never closes rotated files holds deleted files' disk space for ever (the node fills up
with invisible files); one that never forgets grows its state file with every rotation. Both are
checked from outside: ``/proc/<pid>/fd`` for descriptors, ``sidecar-state.json`` for entries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory, metric, scrape, state_offset
from tests.prom import free_port
from tests.writer import LogWriter


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_renamed_and_deleted_files_are_closed_once_quiet_for_rotate_wait(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    renamed = LogWriter(log_dir / "a.log", "a")
    deleted = LogWriter(log_dir / "b.log", "b")
    renamed.write(100)
    deleted.write(100)
    sc = sidecar(f"{log_dir}/*.log", "--rotate-wait", "3s")
    sc.wait_delivered({"a": renamed.written, "b": deleted.written})
    old_a, old_b = identity(renamed.path), identity(deleted.path)
    renamed.rename_rotate(log_dir / "a.log.1", late_lines=50)
    deleted.write(50)
    deleted.delete()
    sc.wait_stderr(f"event=file_rotated path={renamed.path} kind=rename")
    sc.wait_stderr(f"event=file_rotated path={deleted.path} kind=delete")
    assert {old_a, old_b} <= sc.open_files(), "let go before --rotate-wait (3 s) had passed"
    sc.wait_let_go(old_a, timeout=20)
    sc.wait_let_go(old_b, timeout=20)
    renamed.write(10)
    deleted.write(10)
    sc.wait_delivered({"a": renamed.written, "b": deleted.written})
    assert sc.stop() == 0
    assert_exactly_once(
        sc.output(),
        {"a": renamed.written, "b": deleted.written},
        files={"a": renamed.files, "b": deleted.files},
    )


def test_forget_after_drops_the_entry_of_a_file_gone_that_long(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """The renamed file is let go and its entry kept (its path names another file now); it is dropped
    only once ``--forget-after`` has passed since it was last seen, while the live file's entry stays."""
    forget_after = 2.0
    writer = LogWriter(log_dir / "app.log")
    writer.write(20)
    sc = sidecar(writer.path, "--rotate-wait", "0.3s", "--forget-after", f"{forget_after}s")
    sc.wait_delivered({"app": writer.written})
    old = identity(writer.path)
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(5)
    sc.wait_let_go(old)
    state = checkpoint_dir / "sidecar-state.json"
    last_seen: float | None = None
    deadline = time.monotonic() + forget_after + 15
    while True:
        assert time.monotonic() < deadline, f"the let-go file's entry was never dropped\n{sc.stderr()}"
        try:
            doc = json.loads(state.read_bytes())
        except json.JSONDecodeError:  # caught mid-replace
            continue
        entry = next((e for e in doc["files"] if (e["dev"], e["ino"]) == old), None)
        if entry is not None:
            last_seen = entry["seen"]
        elif last_seen is not None:
            gone_for = doc["written_at"] - last_seen
            assert gone_for >= forget_after, f"dropped {gone_for:.2f}s after it was last seen"
            break
        time.sleep(0.02)
    sc.wait_delivered({"app": writer.written})
    assert state_offset(checkpoint_dir, writer.path) == writer.path.stat().st_size
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_deleted_file_the_stalled_sink_never_got_to_is_given_up_after_rotate_wait_max_and_counted(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """stdout stalls in the middle of a.log; b.log appears (opened, never read) and is deleted. After
    --rotate-wait-max its bytes are given up: one warning and the same count on /metrics, its descriptor
    closed (the space is freed) while the reader is still away; then a.log flows on, whole."""
    busy = LogWriter(log_dir / "a.log", "a")
    busy.write(40_000)  # ~4.4 MiB: more than the pipe and a read hold
    port = free_port()
    sc = sidecar(
        f"{log_dir}/*.log",
        *("--rotate-wait", "0.2s", "--rotate-wait-max", "1s"),
        *("--metrics-port", str(port), "--metrics-address", "127.0.0.1"),
        stdout="held",
    )
    sc.wait_stdout_stalled()
    doomed = LogWriter(log_dir / "b.log", "b")
    doomed.write(1000)
    size, key = doomed.path.stat().st_size, identity(doomed.path)
    sc.wait_stderr(f"event=file_opened path={doomed.path}")
    doomed.delete()
    err = sc.wait_stderr("event=rotated_file_given_up", timeout=20)
    warnings = [line for line in err.splitlines() if "event=rotated_file_given_up" in line]
    assert len(warnings) == 1, warnings
    assert f"path={doomed.path}" in warnings[0]
    assert f"unread_bytes={size}" in warnings[0]
    assert metric(scrape(port), "sidecar_bytes_given_up_total") == size
    sc.wait_let_go(key)
    assert sc.stdout_pending() > 0, "the reader is still away"
    sc.release_stdout()
    sc.wait_delivered({"a": busy.written}, timeout=20)
    assert sc.stop() == 0
    report = assert_exactly_once(sc.output(), {"a": busy.written})
    assert report.foreign == 0, "lines of the given-up file came out"
