"""copytruncate and friends, with the real Debian ``logrotate`` and by hand, while the sidecar keeps up or lags.

copytruncate has a window of its own: lines the application writes between logrotate's copy and its
truncate are in neither file. Those are logrotate's loss, not ours, so the tests with a live writer
expect exactly the lines that survived on disk (and allow, not require, the ones that did not). When
the sidecar is behind (SIGSTOP, as a CPU-throttled pod) at the truncate, the lines it had not read yet
are in the copy: the core must read them from there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.checker import assert_exactly_once, lines_in_files
from tests.conftest import SidecarFactory
from tests.writer import BackgroundWriter, LogWriter

LOGROTATE = "/usr/sbin/logrotate"


def logrotate(tmp_path: Path, log: Path, directives: str, keep: int = 10) -> None:
    """Run logrotate once, forced, with its own state file and a config for ``log`` alone (``rotate keep``)."""
    config = tmp_path / "logrotate.conf"
    config.write_text(f"{log} {{\n{directives}\n    rotate {keep}\n    missingok\n}}\n")
    subprocess.run(
        [LOGROTATE, "-s", str(tmp_path / "logrotate.state"), "-f", str(config)],
        check=True,
        capture_output=True,
        timeout=10,
    )


@pytest.mark.parametrize("glob", ["app.log", "app.log*"])
def test_real_logrotate_copytruncate_while_the_app_writes(
    glob: str, tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """With ``app.log*`` the copies match the glob too: recognised by their head, they are not read twice."""
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.001)
    background.writer.write(100)
    sc = sidecar(log_dir / glob)
    background.start()
    for rotation in range(1, 4):
        background.wait_written(100 + 150 * rotation)
        logrotate(tmp_path, app, "    copytruncate")
    background.wait_written(len(background.writer.written) + 100)
    written = background.stop()
    on_disk = lines_in_files(log_dir.glob("app.log*"), "app")
    sc.wait_delivered({"app": on_disk})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": on_disk}, may_lose={"app": set(written) - on_disk})


def test_real_logrotate_rename_with_app_reopening_after_it(
    tmp_path: Path, log_dir: Path, sidecar: SidecarFactory
) -> None:
    """``create`` mode: rename, new empty file; the app keeps writing the old file until it reopens."""
    app = log_dir / "app.log"
    background = BackgroundWriter(LogWriter(app), interval=0.001)
    sc = sidecar(app)
    background.start()
    for rotation in range(1, 4):
        background.wait_written(150 * rotation)
        logrotate(tmp_path, app, "    create")
        background.wait_written(150 * rotation + 20)  # late lines into the renamed file
        background.reopen()
    background.wait_written(len(background.writer.written) + 100)
    written = background.stop()
    sc.wait_delivered({"app": written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": written}, files={"app": background.writer.files})


def _copytruncate_by_writer(tmp_path: Path, writer: LogWriter) -> None:
    writer.copytruncate(writer.path.with_name(writer.path.name + ".1"))


def _copytruncate_by_logrotate(tmp_path: Path, writer: LogWriter) -> None:
    logrotate(tmp_path, writer.path, "    copytruncate")


@pytest.mark.parametrize("watch", ["auto", "poll"])
@pytest.mark.parametrize(
    "copytruncate", [_copytruncate_by_writer, _copytruncate_by_logrotate], ids=["by-app", "by-logrotate"]
)
def test_copytruncate_while_sidecar_is_behind_reads_missing_lines_from_the_copy(
    tmp_path: Path,
    log_dir: Path,
    sidecar: SidecarFactory,
    copytruncate: Callable[[Path, LogWriter], None],
    watch: str,
) -> None:
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(1000)
    sc = sidecar(app, "--watch", watch)
    sc.wait_for_lines(1000)
    sc.pause()
    writer.write(500)
    copytruncate(tmp_path, writer)
    writer.write(200)
    sc.resume()
    sc.wait_delivered({"app": writer.written})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})


def test_plain_truncate_while_behind_loses_only_the_unread_lines(log_dir: Path, sidecar: SidecarFactory) -> None:
    """No copy to read from: the unread lines are gone, the file restarts at 0 and nothing else suffers."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(1000)
    sc = sidecar(app)
    sc.wait_for_lines(1000)
    sc.pause()
    unread = writer.write(500)
    writer.truncate()
    after = writer.write(200)
    sc.resume()
    sc.wait_delivered({"app": after})
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, may_lose={"app": unread})


def test_copy_beside_a_file_renamed_while_behind_is_not_read_as_a_new_generation(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Found by the model: a copytruncate copy has the head of lines already read, so it is no new generation."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(20)
    sc = sidecar(app)
    sc.wait_for_lines(20)
    sc.pause()
    writer.copytruncate(log_dir / "app.log.1")
    writer.write(3)
    writer.rename_rotate(log_dir / "app.log.2")
    writer.write(5)
    sc.resume()
    sc.wait_delivered({"app": writer.written})
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written}, files={"app": writer.files})


def test_copy_found_while_logrotate_is_still_writing_it_is_not_read_from_the_middle(
    log_dir: Path, checkpoint_dir: Path, sidecar: SidecarFactory
) -> None:
    """``app.log*`` sees ``app.log.1`` while the copy is half done (cut mid-line); it must not follow it."""
    app = log_dir / "app.log"
    writer = LogWriter(app)
    writer.write(1000)
    sc = sidecar(f"{log_dir}/app.log*", "--log-level", "debug")
    sc.wait_for_lines(1000)
    content = app.read_bytes()
    copy = log_dir / "app.log.1"
    with copy.open("wb", buffering=0) as out:
        out.write(content[: len(content) // 2 + 7])
        sc.wait_stderr(f"event=copy_skipped path={copy}")  # the sidecar has seen the half copy
        out.write(content[len(content) // 2 + 7 :])
    sc.wait_quiet(0.6)
    writer.truncate()
    writer.write(10)
    sc.wait_delivered({"app": writer.written})
    sc.wait_quiet(0.3)
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"app": writer.written})
