"""Stopping and starting again: the checkpoint makes SIGTERM exactly-once and SIGKILL lossless.

The output of all runs of one sidecar is checked as one stream, as a log backend would see it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.checker import assert_exactly_once, check
from tests.conftest import SidecarFactory, read_state, unconfirmed_lines, wait_for_checkpoint
from tests.writer import BackgroundWriter, LogWriter, make_line


def test_sigterm_restarts_repeat_and_lose_nothing(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.001)
    background.writer.write(10)
    sc = sidecar(app)
    background.start()
    for _ in range(3):
        background.wait_written(len(background.writer.written) + 200)
        assert sc.stop() == 0
        background.wait_written(len(background.writer.written) + 100)  # written while down
        sc.start()
    written = background.stop()
    sc.wait_delivered({"app": written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": written})


def test_sigint_drains_and_exits_zero_like_sigterm(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app)
    sc.wait_for_lines(100)
    writer.write(100)
    assert sc.stop(signal.SIGINT) == 0
    sc.start()
    sc.wait_for_lines(200)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_sigkill_restart_loses_nothing_and_repeats_only_unconfirmed_lines(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(1000)
    sc = sidecar(app, "--checkpoint-interval", "2s")
    sc.wait_for_lines(1000)
    wait_for_checkpoint(checkpoint_dir, app, app.stat().st_size, timeout=5)
    unconfirmed = writer.write(300)
    sc.wait_for_lines(1300)
    sc.kill()
    writer.write(200)  # written while down
    sc.start()
    sc.wait_delivered({"app": writer.written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, may_duplicate={"app": unconfirmed})


def test_repeated_sigkill_under_load_loses_nothing(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """Each kill comes once the current file is checkpointed; then it is renamed away while down. Only
    lines past the state file's offsets at a kill may come twice."""
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.001)
    sc = sidecar(app)
    background.start()
    repeatable: set[int] = set()
    for generation in range(1, 4):
        background.wait_written(len(background.writer.written) + 300)
        wait_for_checkpoint(checkpoint_dir, app, 1)
        sc.kill()
        repeatable |= unconfirmed_lines(checkpoint_dir, log_dir.glob("app.log*"), "app")
        app.rename(log_dir / f"app.log.{generation}")
        background.reopen()
        sc.start()
    written = background.stop()
    sc.wait_delivered({"app": written})
    assert sc.stop() == 0
    assert_exactly_once(
        sc.output(), {"app": written}, may_duplicate={"app": repeatable}, files={"app": background.writer.files}
    )


def test_file_rotated_while_down_is_finished_on_start(log_dir: Path, sidecar: SidecarFactory) -> None:
    """Renamed twice while stopped: the checkpointed inode is now ``app.log.2``, found beside by identity."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    writer.write(50)
    writer.rename_rotate(log_dir / "app.log.1")
    (log_dir / "app.log.1").rename(log_dir / "app.log.2")
    writer.write(70)
    sc.start()
    sc.wait_delivered({"app": writer.written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_generation_created_and_rotated_while_down_is_read_on_start(log_dir: Path, sidecar: SidecarFactory) -> None:
    """The middle generation never reached the state file: only its place beside a known one finds it."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    writer.write(50)
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(60)  # the generation no state file knows
    (log_dir / "app.log.1").rename(log_dir / "app.log.2")
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(70)
    sc.start()
    sc.wait_delivered({"app": writer.written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_copytruncate_while_down_is_finished_from_the_copy(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(500)
    sc = sidecar(app)
    sc.wait_for_lines(500)
    assert sc.stop() == 0
    writer.write(300)
    writer.copytruncate(log_dir / "app.log.1")
    writer.write(100)
    sc.start()
    sc.wait_delivered({"app": writer.written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


@pytest.mark.parametrize("read_before_stop", [0, 50])
def test_copytruncate_then_rename_while_down_reads_the_copy_before_the_file_it_was_taken_from(
    read_before_stop: int, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: while down, the file is copytruncated, written again and renamed away. Found by its
    identity beside its old name, it no longer holds what we read: its copies are beside the name it had,
    not beside the one it has now, and what they hold comes out first."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(read_before_stop)
    writer.write_partial(20)
    sc = sidecar(app)
    sc.wait_for_lines(read_before_stop)
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    writer.finish_partial()
    writer.write(30)
    writer.copytruncate(log_dir / "app.log.1")
    writer.write(10)
    writer.rename_rotate(log_dir / "app.log.2", late_lines=3)
    writer.write(5)
    sc.start()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected, files={"app": writer.files})
    assert report.ok, report.summary()


def test_copy_made_before_the_file_was_ever_seen_does_not_come_out_after_newer_lines(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: the configured file appears and is copytruncated while the sidecar is down, before
    any run saw it; the sidecar starts, reads the file and sees it deleted. The generation search that the
    delete starts reaches back before its previous search, but not before the file was first seen: the copy
    is history no run followed, and read now its lines would come after the newer ones."""
    app = log_dir / "app.log"
    sc = sidecar(app)
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    writer = LogWriter(app)
    old = writer.write(2)
    writer.copytruncate(log_dir / "app.log.1")
    writer.write(6)
    time.sleep(0.2)  # the copy is older than the sidecar's first look by more than the file clock's slack
    sc.start()
    new = {"app": writer.written[len(old) :]}
    sc.wait_delivered(new)
    writer.delete()
    sc.wait_quiet(1.0)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), new)


def test_read_from_tail_skips_existing_content_only_at_first_start(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    old = writer.write(100)
    sc = sidecar(app, "--read-from", "tail")
    wait_for_checkpoint(checkpoint_dir, app, app.stat().st_size)
    writer.write(10)
    sc.wait_for_lines(10)
    assert sc.stop() == 0
    writer.write(20)  # while down: resumed from the checkpoint, not skipped as "existing"
    sc.start()
    sc.wait_for_lines(30)
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written[len(old) :]})


def test_read_from_tail_reads_files_created_while_down_from_the_head(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """Only the very first start (no state file) skips what exists; a file born while down is all new."""
    old = LogWriter(log_dir / "old.log", "old")
    skipped = old.write(50)
    sc = sidecar(f"{log_dir}/*.log", "--read-from", "tail")
    wait_for_checkpoint(checkpoint_dir, old.path, old.path.stat().st_size)
    assert sc.stop() == 0
    born = LogWriter(log_dir / "born.log", "born")
    born.write(40)
    old.write(10)
    sc.start()
    sc.wait_delivered({"born": born.written, "old": old.written[len(skipped) :]})
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"born": born.written, "old": old.written[len(skipped) :]})


def test_partial_line_at_sigterm_is_kept_and_comes_out_whole_after_restart(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(10)
    sc = sidecar(app)
    sc.wait_for_lines(10)
    writer.write_partial(12)
    sc.wait_quiet(0.4)
    assert sc.stop() == 0
    assert sc.output().count(b"\n") == 10
    writer.write(5)  # completes the partial line first
    sc.start()
    sc.wait_for_lines(16)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_partial_line_is_emitted_only_once_completed(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(3)
    sc = sidecar(app)
    sc.wait_for_lines(3)
    writer.write_partial()
    assert sc.wait_quiet(0.5) == b"".join(make_line("app", n) for n in range(3))
    writer.finish_partial()
    sc.wait_for_lines(4)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_unterminated_last_line_of_rotated_file_is_emitted_with_newline_when_let_go(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Chosen behaviour: a rotated-away file whose last line never ends gets a ``\\n`` when released."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(5)
    sc = sidecar(app, "--rotate-wait", "0.5s")
    sc.wait_for_lines(5)
    unfinished = writer.write_partial(20)
    writer.abandon_partial()
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(5)
    fragment = make_line("app", unfinished)[:20] + b"\n"
    sc.wait_for(lambda out: fragment in out, "the unfinished line, let go with a newline", timeout=5)
    sc.wait_for_lines(11)
    assert sc.stop() == 0
    lines = sc.output().splitlines(keepends=True)
    assert lines.count(fragment) == 1
    kept = [line for line in lines if line != fragment]
    assert_exactly_once(b"".join(kept), {"app": writer.written})


def test_second_signal_exits_at_once_during_a_long_drain(log_dir: Path, sidecar: SidecarFactory) -> None:
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.002)
    sc = sidecar(app, "--drain-timeout", "60s")
    background.start()
    try:
        sc.wait_for_lines(50)
        sc.send(signal.SIGTERM)
        sc.wait_stderr("event=stopping")
        assert sc.running, "with a busy file and --drain-timeout 60s the first SIGTERM keeps draining"
        sc.send(signal.SIGTERM)
        sc.wait(timeout=15)  # far less than the 60 s the first signal alone would take
        assert "event=second_signal" in sc.stderr()
    finally:
        background.stop()


def test_corrupt_state_file_is_moved_aside_with_one_error_line(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    state = checkpoint_dir / "sidecar-state.json"
    state.write_bytes(b'{"version": 1, "files": [{"dev": "oops"')
    writer = LogWriter(log_dir / "app.log")
    writer.write(20)
    sc = sidecar(log_dir / "app.log")
    sc.wait_for_lines(20)
    aside = [p for p in checkpoint_dir.iterdir() if p.name.startswith("sidecar-state.json.")]
    assert len(aside) == 1, list(checkpoint_dir.iterdir())
    assert aside[0].read_bytes() == b'{"version": 1, "files": [{"dev": "oops"'
    errors = [line for line in sc.stderr().splitlines() if "sidecar-state.json" in line]
    assert len(errors) == 1, sc.stderr()
    assert "Traceback" not in sc.stderr()
    wait_for_checkpoint(checkpoint_dir, log_dir / "app.log", (log_dir / "app.log").stat().st_size)
    assert sc.stop() == 0
    assert read_state(checkpoint_dir)
