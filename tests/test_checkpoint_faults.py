"""The state file under attack, through the CLI: a full volume, bad fields, a second sidecar on the directory.

The full volume is a real 64 KiB tmpfs mounted over the checkpoint directory (the tests run as root,
as ``make test`` does in the dev container); a filler file leaves less room than the next state file
needs, so the kernel writes it short, exactly as on a nearly full PersistentVolume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.core.checkpoint import LOCK_FILE, STATE_FILE
from sidecar.core.identity import Fingerprint
from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory, read_state, wait_for_checkpoint
from tests.writer import LogWriter

FILES = 60
"""Enough files (with long names) for a state file of ~25 KiB: a third of the volume."""


@pytest.fixture
def small_volume(checkpoint_dir: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted over the checkpoint directory for the test."""
    if os.geteuid() != 0:
        pytest.fail("mounting a 64 KiB tmpfs needs root: run the suite as root (as make test does in the container)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(checkpoint_dir)], check=True)
    try:
        yield checkpoint_dir
    finally:
        subprocess.run(["umount", "-l", str(checkpoint_dir)], check=True)


def _fill(volume: Path, leave: int) -> None:
    """Write a filler file so that only about ``leave`` bytes stay free."""
    st = os.statvfs(volume)
    (volume / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))


def test_a_state_file_too_big_for_the_volume_is_not_renamed_into_place_and_a_sigkill_repeats_only_since(
    log_dir: Path, small_volume: Path, sidecar: SidecarFactory
) -> None:
    writers = [LogWriter(log_dir / f"service-with-a-rather-long-name-{i:03d}.log", f"s{i:03d}") for i in range(FILES)]
    first = [w.write(20) for w in writers]
    sc = sidecar(log_dir / "*.log")
    for writer in writers:
        wait_for_checkpoint(small_volume, writer.path, writer.path.stat().st_size)
    saved = (small_volume / STATE_FILE).read_bytes()
    _fill(small_volume, leave=len(saved) // 3)
    second = [w.write(5) for w in writers]
    sc.wait_delivered({f"s{i:03d}": second[i] for i in range(FILES)})
    _wait_until(lambda: "checkpoint_failed" in sc.stderr() or (small_volume / STATE_FILE).read_bytes() != saved)
    sc.kill()
    (small_volume / "filler").unlink()
    sc.start()
    sc.wait_delivered({f"s{i:03d}": second[i] for i in range(FILES)})
    sc.stop()
    assert_exactly_once(
        sc.output(),
        {f"s{i:03d}": [*first[i], *second[i]] for i in range(FILES)},
        may_duplicate={f"s{i:03d}": second[i] for i in range(FILES)},
    )
    failed = [line for line in sc.stderr().splitlines() if "checkpoint_failed" in line]
    assert len(failed) == 1, sc.stderr()
    assert "No space left on device" in failed[0]
    assert "checkpoint_unreadable" not in sc.stderr()


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.02)


def _entry_for(path: Path, offset: int, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    st = path.stat()
    fp = Fingerprint.of(path.read_bytes())
    entry = {"dev": st.st_dev, "ino": st.st_ino, "fingerprint": fp.digest, "fp_len": fp.length, "offset": offset,
             "path": str(path), "pattern": str(path), "seen": time.time(), "gone_since": None}
    return {**entry, **(changes or {})}


@pytest.mark.parametrize("bad", [{"path": None}, {"seen": "x"}, {"offset": -5}, {"dev": "a"}, {"fp_len": None}])
def test_a_state_file_entry_with_a_bad_field_is_dropped_and_the_sidecar_follows_and_checkpoints(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory, bad: dict[str, Any]
) -> None:
    app, gone = LogWriter(log_dir / "app.log"), LogWriter(log_dir / "gone.log", "gone")
    app.write(100)
    gone.write(10)
    half = len(b"".join(app.path.read_bytes().splitlines(keepends=True)[:50]))
    entries = [_entry_for(app.path, half), _entry_for(gone.path, 0, bad)]
    gone.delete()
    (checkpoint_dir / STATE_FILE).write_text(json.dumps({"version": 1, "written_at": time.time(), "files": entries}))
    sc = sidecar(app.path)
    sc.wait_delivered({"app": range(50, 100)})
    more = app.write(50)
    sc.wait_delivered({"app": more})
    wait_for_checkpoint(checkpoint_dir, app.path, app.path.stat().st_size)
    assert [e["path"] for e in read_state(checkpoint_dir)] == [str(app.path)]
    sc.stop()
    dropped = [line for line in sc.stderr().splitlines() if "checkpoint_entry_dropped" in line]
    assert len(dropped) == 1, sc.stderr()
    assert f"state file {checkpoint_dir / STATE_FILE}: entry 1 dropped: {next(iter(bad))} " in dropped[0]
    assert_exactly_once(sc.output(), {"app": range(50, 150)})


def test_a_second_sidecar_on_the_same_checkpoint_dir_exits_naming_the_lock_and_its_holder(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    app = LogWriter(log_dir / "app.log")
    app.write(10)
    first = sidecar(app.path)
    second = sidecar(app.path, ready=False)
    assert second.wait(timeout=10) == 1
    err = second.runs[-1].stderr_path.read_text()
    assert len(err.splitlines()) == 1, err
    assert f"{checkpoint_dir / LOCK_FILE} is locked by pid {first.proc.pid} on " in err
    assert "--checkpoint-dir" in err
    assert second.output() == b""
    assert first.stop(signal.SIGTERM) == 0
    assert_exactly_once(first.output(), {"app": range(10)})
