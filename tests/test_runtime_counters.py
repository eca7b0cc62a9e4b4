"""The run-time counters, end to end: what a running ``sidecar stream`` shows on ``/metrics`` after it happened.

``test_metrics`` checks the series one call at a time; these check that the core makes the calls, once
per event, with the right labels: every rotation kind, long lines split, files that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.checker import assert_exactly_once
from tests.conftest import SidecarFactory, SidecarProcess, metric, scrape
from tests.prom import free_port
from tests.writer import LogWriter

MAX_LINE = 1024


def with_metrics(sidecar: SidecarFactory, *args: str) -> tuple[SidecarProcess, int]:
    port = free_port()
    return sidecar(*args, "--metrics-port", str(port), "--metrics-address", "127.0.0.1"), port


def test_each_kind_of_rotation_is_counted_once_by_kind(tmp_path: Path, log_dir: Path, sidecar: SidecarFactory) -> None:
    links, targets = tmp_path / "links", tmp_path / "targets"
    links.mkdir()
    targets.mkdir()
    writers = {kind: LogWriter(log_dir / f"{kind}.log", kind) for kind in ("rename", "copy", "truncate", "delete")}
    link_target = LogWriter(targets / "0.log", "link0")
    for writer in [*writers.values(), link_target]:
        writer.write(30)
    (links / "app.log").symlink_to(link_target.path)
    sc, port = with_metrics(sidecar, f"{log_dir}/*.log", f"{links}/*.log")
    expected = {w.stream: w.written for w in [*writers.values(), link_target]}
    sc.wait_delivered(expected)

    writers["rename"].rename_rotate(log_dir / "rename.log.1")
    sc.wait_stderr(f"path={writers['rename'].path} kind=rename")
    writers["copy"].copytruncate(log_dir / "copy.log.1")
    sc.wait_stderr(f"path={writers['copy'].path} kind=copytruncate")
    writers["truncate"].truncate()
    sc.wait_stderr(f"event=file_truncated path={writers['truncate'].path}")
    writers["delete"].delete()
    sc.wait_stderr(f"path={writers['delete'].path} kind=delete")
    new_target = LogWriter(targets / "1.log", "link1")
    new_target.write(10)
    (links / ".swap").symlink_to(new_target.path)
    os.replace(links / ".swap", links / "app.log")
    sc.wait_stderr(f"path={links / 'app.log'} kind=symlink")
    for writer in writers.values():
        writer.write(10)
    expected = {**{w.stream: w.written for w in [*writers.values(), link_target]}, "link1": new_target.written}
    sc.wait_delivered(expected)

    samples = scrape(port)
    counted = {kind: metric(samples, "sidecar_files_rotated_total", kind=kind)
               for kind in ("rename", "copytruncate", "truncate", "delete", "symlink")}
    assert counted == {"rename": 1, "copytruncate": 1, "truncate": 1, "delete": 1, "symlink": 1}
    assert metric(samples, "sidecar_files_rotated_total", pattern=f"{links}/*.log") == 1
    assert sc.stop() == 0
    assert_exactly_once(
        sc.output(), expected, files={"rename": writers["rename"].files, "delete": writers["delete"].files}
    )


def test_long_lines_are_split_into_pieces_that_end_in_newline_and_counted_once_each(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    """Three lines over --max-line-bytes (two of them many reads long) and one exactly at the limit."""
    text = "ab\u00e9c\u20acd\U0001f600"  # 1-, 2-, 3- and 4-byte UTF-8 sequences, so cuts fall inside them
    lines = [
        (text * 500).encode()[: MAX_LINE * 5],
        (text * 30_000).encode(),
        b"x" * MAX_LINE,
        (text * 3).encode() + b"y" * MAX_LINE,
    ]
    lines = [line.decode(errors="ignore").encode() for line in lines]  # whole characters only
    content = b"".join(line + b"\n" for line in lines)
    (log_dir / "long.log").write_bytes(content)
    sc, port = with_metrics(sidecar, str(log_dir / "long.log"), "--max-line-bytes", f"{MAX_LINE}")
    sc.wait_for_bytes(len(content))
    sc.wait_quiet(0.3)
    samples = scrape(port)
    assert sc.stop() == 0
    pieces = sc.output().split(b"\n")
    assert pieces.pop() == b""
    assert all(len(piece) <= MAX_LINE for piece in pieces)
    for piece in pieces:
        piece.decode()  # every piece is valid UTF-8: no cut inside a character
    assert b"".join(pieces) == b"".join(lines)
    assert metric(samples, "sidecar_long_lines_split_total") == 3


def test_a_match_that_cannot_be_read_is_one_stderr_line_and_counted_while_the_others_flow(
    log_dir: Path, sidecar: SidecarFactory
) -> None:
    os.mkfifo(log_dir / "pipe.log")
    good = LogWriter(log_dir / "good.log", "good")
    good.write(20)
    sc, port = with_metrics(sidecar, f"{log_dir}/*.log")
    sc.wait_delivered({"good": good.written})
    for _ in range(3):  # several polls (0.2 s) look at the fifo again
        good.write(20)
        sc.wait_delivered({"good": good.written})
        sc.wait_quiet(0.3)
    samples = scrape(port)
    assert metric(samples, "sidecar_read_errors_total", reason="not_regular", pattern=f"{log_dir}/*.log") >= 1
    complaints = [line for line in sc.stderr().splitlines() if f"path={log_dir / 'pipe.log'}" in line]
    assert len(complaints) == 1, complaints
    assert "level=error" in complaints[0]
    assert sc.stop() == 0
    assert_exactly_once(sc.output(), {"good": good.written})
