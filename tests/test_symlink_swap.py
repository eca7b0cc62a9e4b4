"""Following a path that is a symlink, kubelet style: ``/var/log/containers/<pod>_<ns>_<ctr>-<id>.log``.

The kubelet points the link at the current container's log, ``/var/log/pods/<ns>_<pod>_<uid>/<ctr>/<n>.log``,
and repoints it when the container restarts; a crash-looping container repoints it every few
milliseconds, each new container writing thousands of lines at once. The runtime rotates the target by
renaming it beside itself (``0.log`` -> ``0.log.<timestamp>``). Every target and every generation must
be read to its end, by identity: a target the link pointed at only between two of our looks included,
even when the sidecar is busy with another container's backlog (see ``test_timing_rotation``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.checker import check
from tests.conftest import SidecarFactory, SidecarProcess
from tests.test_timing_rotation import BACKLOG, busy_sidecar
from tests.writer import LogWriter


class Kubelet:
    """A container log directory with its ``/var/log/containers`` link, repointed per restart."""

    def __init__(self, root: Path) -> None:
        self.pods = root / "pods" / "ns_app_0a1b2c" / "app"
        self.containers = root / "containers"
        self.pods.mkdir(parents=True)
        self.containers.mkdir()
        self.link = self.containers / "app_ns_app-0a1b2c.log"
        self.restarts = 0

    def start_container(self) -> LogWriter:
        """The next container's log file, created empty, and the link moved to it atomically."""
        target = self.pods / f"{self.restarts}.log"
        writer = LogWriter(target, f"c{self.restarts}")
        writer.reopen()  # creates the file, as the runtime does before the container starts
        swap = self.containers / f".{self.link.name}.tmp"
        swap.symlink_to(target)
        os.replace(swap, self.link)
        self.restarts += 1
        return writer


@pytest.mark.parametrize("round_", range(3))
def test_symlink_repointed_every_few_milliseconds_reads_every_target(
    round_: int, tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """Five restarts ~12 ms apart, 6,000 lines into each target while the link points at it; meanwhile the
    sidecar catches up with the ``web`` container's backlog."""
    kubelet = Kubelet(tmp_path)
    first = kubelet.start_container()
    first.write(100)
    web = LogWriter(kubelet.pods.parent / "web.log", "web")
    web.reopen()
    (kubelet.containers / "web_ns_app-0a1b2c.log").symlink_to(web.path)
    sc = busy_sidecar(sidecar, f"{kubelet.containers}/*.log")
    sc.wait_for_lines(100)
    web.write(BACKLOG)
    writers = [first]
    for _ in range(5):
        writer = kubelet.start_container()
        writers.append(writer)
        for _ in range(3):
            writer.write(2000)
            time.sleep(0.004)
    sc.stdout_rate = None
    expected = {w.stream: w.written for w in [*writers, web]}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, f"{report.summary()} (of {sum(map(len, expected.values()))} written into 7 targets)"


def test_configured_symlink_gets_the_generation_search_when_its_target_is_renamed(
    tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """The runtime renames ``0.log`` twice while the sidecar is stopped, and has not created the next one
    when the sidecar looks again (the link dangles). The middle generation was never seen under any name:
    only the generation search beside the target finds it, as it does for a configured path that is a file.
    """
    kubelet = Kubelet(tmp_path)
    writer = kubelet.start_container()
    writer.write(200)
    sc = sidecar(kubelet.link, "--poll-interval", "0.3s")
    sc.wait_for_lines(200)
    sc.pause()
    writer.write(100)
    os.rename(writer.path, writer.path.with_name("0.log.20261201-101500"))
    writer.reopen()
    writer.write(300)  # the generation no look ever saw at 0.log
    os.rename(writer.path, writer.path.with_name("0.log.20261201-101501"))
    writer.close()
    sc.resume()
    sc.wait_stderr("event=file_rotated")
    time.sleep(0.6)  # two polls: the sidecar has looked at the dangling link since
    writer.write(50)  # the runtime's next 0.log
    expected = {writer.stream: writer.written}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected)
    assert report.ok, report.summary()


def test_target_rotated_before_the_sidecar_saw_it_is_found_among_the_new_files(
    tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: while the sidecar is stopped, the link moves to a new container's log, which is
    rotated by rename at once (the runtime writes to the renamed file a moment longer) and the link moves
    on again. The first target was never under the name the link pointed at when the sidecar looked."""
    kubelet = Kubelet(tmp_path)
    first = kubelet.start_container()
    first.write(100)
    sc = sidecar(kubelet.link)
    sc.wait_for_lines(100)
    sc.pause()
    second = kubelet.start_container()
    second.write(20)
    second.rename_rotate(second.path.with_name("1.log.20261201-101500"), late_lines=30)
    second.write(10)  # the runtime's new 1.log
    third = kubelet.start_container()
    third.write(40)
    sc.resume()
    expected = {w.stream: w.written for w in (first, second, third)}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected, files={w.stream: w.files for w in (first, second, third)})
    assert report.ok, report.summary()


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def _paused_while_following_a_container(tmp_path: Path, sidecar: SidecarFactory
                                        ) -> tuple[Kubelet, LogWriter, SidecarProcess]:
    """A container that wrote 100 lines, read by a sidecar that polls only every 30 s, now paused: only the
    events can find what happens next."""
    kubelet = Kubelet(tmp_path)
    writer = kubelet.start_container()
    writer.write(100)
    sc = sidecar(kubelet.link, "--poll-interval", "30s", "--rotate-wait", "1s")
    sc.wait_for_lines(100)
    sc.pause()
    return kubelet, writer, sc


def _assert_every_line_once_in_order(sc: SidecarProcess, *writers: LogWriter) -> None:
    expected = {w.stream: w.written for w in writers}
    sc.settle(expected)
    assert sc.stop() == 0
    report = check(sc.output(), expected, files={w.stream: w.files for w in writers})
    assert report.ok, f"{report.summary()}\n{sc.stderr()}"


@pytest.mark.parametrize("words_before_swap", [0, 30])
@pytest.mark.parametrize("look", ["after_rename", "after_create", "after_swap"])
def test_target_renamed_then_link_swapped_reads_the_target_created_between(
    look: str, words_before_swap: int, tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: the runtime rotates ``0.log`` by rename and creates it again, then the container
    restarts and the link moves on; the new ``0.log`` was the link's target in between, and gets its last
    words after the swap. The sidecar looks at one moment of the three (after the rename, after the create,
    only after the swap); none may cost the new ``0.log`` its lines, even while it was empty when seen."""
    kubelet, writer, sc = _paused_while_following_a_container(tmp_path, sidecar)
    os.rename(writer.path, writer.path.with_name("0.log.20261201-101500"))
    writer.write(20)  # late lines into the renamed generation
    if look == "after_rename":
        sc.resume()
        sc.wait_stderr("kind=rename")
        sc.pause()
    writer.reopen()
    if look == "after_create":
        sc.resume()
        target = (writer.path.stat().st_dev, writer.path.stat().st_ino)
        _until(lambda: target in sc.open_files(), "the sidecar opened the new 0.log")
        sc.pause()
    writer.write(words_before_swap)
    second = kubelet.start_container()
    writer.write(25)  # the old container's last words, after the link moved
    second.write(40)
    sc.resume()
    _assert_every_line_once_in_order(sc, writer, second)


def test_target_the_sidecar_never_saw_gets_its_last_words_though_empty_when_found(
    tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: while the sidecar cannot look, the link moves to a new, empty ``1.log``, which is
    rotated by rename at once and created again; the link moves on to ``2.log`` and only then does the old
    container write its last words into the new ``1.log``. When the sidecar looks, that file is empty and
    was never under the link's name as far as it saw: it is kept anyway (its name is no copy's), and read."""
    kubelet, first, sc = _paused_while_following_a_container(tmp_path, sidecar)
    second = kubelet.start_container()
    os.rename(second.path, second.path.with_name("1.log.20261201-101500"))
    second.reopen()
    third = kubelet.start_container()
    sc.resume()
    sc.wait_stderr("kind=symlink")
    second.write(30)  # the last words, after the sidecar found the empty 1.log
    third.write(40)
    _assert_every_line_once_in_order(sc, first, second, third)


@pytest.mark.parametrize("old_target", ["renamed", "deleted"])
def test_link_moved_on_after_its_target_was_rotated_reads_the_target_created_between(
    old_target: str, tmp_path: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: while the sidecar cannot look, the link's target is rotated away (renamed, or
    renamed and deleted), created again, and the link moves on; the new ``0.log`` gets its last words. The
    first look sees the target's name taken and the link moved at once: both searches run, beside the old
    target for its generations and among the new files for the targets in between."""
    kubelet, writer, sc = _paused_while_following_a_container(tmp_path, sidecar)
    rotated = writer.path.with_name("0.log.20261201-101500")
    writer.rename_rotate(rotated, late_lines=10)
    if old_target == "deleted":
        rotated.unlink()  # the sidecar holds it open: its lines are still read
    writer.write(15)
    second = kubelet.start_container()
    writer.write(25)
    second.write(40)
    sc.resume()
    _assert_every_line_once_in_order(sc, writer, second)
