"""Files the state file knows under a sibling name (``app.log.1``) that the glob does not match.

Generations, copytruncate copies and files resumed after a restart are followed under the name they
were found at, beside the configured one. After a SIGKILL their saved entry is still found at that
name, and the glob will never offer it: the start itself must reopen them, or their unread and
unacknowledged bytes are never read again. And a generation resumed at start is older than the file
now holding the name: its lines come out first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, read_state, settle, wait_for_checkpoint
from tests.forward_receiver import ForwardReceiver, as_bytes
from tests.writer import LogWriter


@pytest.fixture
def receiver() -> Iterator[ForwardReceiver]:
    with ForwardReceiver() as running:
        yield running


def test_generation_resumed_after_a_restart_is_reopened_after_a_sigkill(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """logrotate renamed the file while the sidecar was down; the app writes on to it until it reopens."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    writer.write(50)
    rotated = log_dir / "app.log.1"
    os.rename(app, rotated)  # the app keeps its descriptor on what is now app.log.1
    app.touch()  # logrotate's ``create``
    sc.start()
    sc.wait_for_lines(150)
    wait_for_checkpoint(checkpoint_dir, rotated, rotated.stat().st_size)
    sc.kill()
    writer.write(40)  # late lines, into app.log.1, while the sidecar is down
    writer.reopen()  # postrotate's SIGHUP
    writer.write(30)
    sc.start()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, report.summary()


def test_unacknowledged_copytruncate_copy_is_read_again_after_a_sigkill(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory, receiver: ForwardReceiver
) -> None:
    """Agent mode: the copy's missing range was shipped but never acknowledged when the sidecar was killed."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(1000)
    sc = sidecar(
        app, "--fluentd-host", "127.0.0.1", "--fluentd-port", str(receiver.port),
        "--flush-interval", "0.1s", "--ack-timeout", "30s", mode="agent",
    )  # fmt: skip
    wait_for_checkpoint(checkpoint_dir, app, app.stat().st_size)
    sc.pause()
    writer.write(500)  # read only from the copy
    copy = log_dir / "app.log.1"
    writer.copytruncate(copy)
    writer.write(200)
    acked = receiver.messages  # all of them: the state file holds every line written so far
    receiver.ack_mode = "never"
    sc.resume()
    copy_ino = copy.stat().st_ino
    sc.wait_for(lambda _: any(e["ino"] == copy_ino for e in read_state(checkpoint_dir)), "the copy in the state file")
    receiver.wait_until(lambda r: len(r.events()) >= 1700)
    sc.kill()
    unacked = len(receiver.messages)  # a receiver that never acknowledged them may not have kept them
    receiver.ack_mode = "ack"
    sc.start()
    expected = {"app": writer.written}

    def kept() -> bytes:
        messages = acked + receiver.messages[unacked:]
        return b"".join(as_bytes(e.record["log"]) + b"\n" for m in messages for e in m.events())

    settle(kept, expected)
    assert sc.stop() == 0
    report = check(kept(), expected, may_duplicate=expected)
    assert report.ok, report.summary()


def test_generation_resumed_at_start_comes_out_before_the_file_now_at_its_name(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Old before new: the rest of ``app.log.1`` (read from its saved offset) precedes the new ``app.log``."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(100)
    sc = sidecar(app)
    sc.wait_for_lines(100)
    assert sc.stop() == 0
    writer.write(200)
    writer.rename_rotate(log_dir / "app.log.1")
    writer.write(300)
    sc.start()
    expected = {"app": writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, report.summary()
    order = list(dict.fromkeys(int(line.split(b" ")[1]) for line in sc.output().splitlines()))
    late = next(((a, b) for a, b in pairwise(order) if b < a), None)
    assert late is None, f"app:{late[1]} came out after app:{late[0]}"
