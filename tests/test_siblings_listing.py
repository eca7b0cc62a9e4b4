"""Siblings: which files beside a followed one extend its name, and when a directory listing may be reused.

A listing is reused only while the directory's mtime is unchanged and was already "settled" (older than
``SETTLED_NS``) when the listing was taken: on a coarse file clock, a change made right after a listing can
carry the very mtime the listing saw. These tests set directory times with ``os.utime`` to put the
directory on either side of that line deterministically, and count real ``os.listdir`` calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.core.siblings import SETTLED_NS, Siblings


def _names(found: Siblings, path: Path) -> list[str]:
    return [os.path.basename(s.path) for s in found.of(str(path))]


def _set_mtime(directory: Path, mtime_ns: int) -> None:
    os.utime(directory, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every directory :mod:`sidecar.core.siblings` lists from now on, in call order."""
    calls: list[str] = []
    real_listdir: Callable[[str], list[str]] = os.listdir

    def counting(directory: str) -> list[str]:
        calls.append(directory)
        return real_listdir(directory)

    monkeypatch.setattr("sidecar.core.siblings.os.listdir", counting)
    return calls


def test_sibling_created_right_after_listing_a_fresh_directory_is_seen_even_with_the_same_mtime(
    tmp_path: Path, listings: list[str]
) -> None:
    """The coarse-clock case: the directory changes after the listing but its mtime reads the same. The time
    is set ahead of the clock, so that it is fresh when listed however late this test gets to run."""
    app = tmp_path / "app.log"
    app.write_bytes(b"x\n")
    fresh = time.time_ns() + 5_000_000_000
    _set_mtime(tmp_path, fresh)
    found = Siblings()
    assert _names(found, app) == []

    (tmp_path / "app.log.1").write_bytes(b"old\n")
    _set_mtime(tmp_path, fresh)
    assert _names(found, app) == ["app.log.1"]
    assert listings.count(str(tmp_path)) == 2


def test_sibling_created_right_after_a_listing_is_seen_by_the_next_call(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    app.write_bytes(b"x\n")
    found = Siblings()
    assert _names(found, app) == []
    (tmp_path / "app.log.1").write_bytes(b"old\n")
    assert _names(found, app) == ["app.log.1"]


def test_settled_directory_is_listed_once_across_many_calls_until_a_file_is_created(
    tmp_path: Path, listings: list[str]
) -> None:
    for n in range(20):
        (tmp_path / f"svc{n}.log").write_bytes(b"x\n")
    (tmp_path / "svc3.log.1").write_bytes(b"old\n")
    settled = time.time_ns() - 1_000_000_000
    assert SETTLED_NS < 1_000_000_000
    _set_mtime(tmp_path, settled)
    found = Siblings()

    for _ in range(5):
        for n in range(20):
            assert _names(found, tmp_path / f"svc{n}.log") == (["svc3.log.1"] if n == 3 else [])
    assert listings.count(str(tmp_path)) == 1

    (tmp_path / "svc7.log.1").write_bytes(b"old\n")
    assert os.stat(tmp_path).st_mtime_ns != settled
    assert _names(found, tmp_path / "svc7.log") == ["svc7.log.1"]
    assert listings.count(str(tmp_path)) == 2


def test_only_uncompressed_regular_files_extending_the_name_are_siblings_in_name_order(tmp_path: Path) -> None:
    """``app.logger`` extends ``app.log`` by name, so it is a sibling too (the caller judges it by content)."""
    for name in ("app.log", "app.log.1", "app.log-2026", "app.logger", "app.lo", "app.loh", "app-log", "zapp.log",
                 "app.log.2.gz", "app.log.3.BZ2", "app.log.4.xz", "app.log.5.zst", "app.log.6.lz4", "app.log.7.zip",
                 "app.log.8.Z", "app.log.1.gz"):
        (tmp_path / name).write_bytes(b"x\n")
    (tmp_path / "app.log.d").mkdir()
    os.mkfifo(tmp_path / "app.log.fifo")
    (tmp_path / "app.log.dangling").symlink_to(tmp_path / "nowhere")
    found = Siblings()

    assert _names(found, tmp_path / "app.log") == ["app.log-2026", "app.log.1", "app.logger"]
    assert _names(found, tmp_path / "app.log.1") == []
    assert _names(found, tmp_path / "app.lo") == ["app.log", "app.log-2026", "app.log.1", "app.logger", "app.loh"]
    first = next(iter(found.of(str(tmp_path / "app.log"))))
    assert first.st.st_ino == (tmp_path / "app.log-2026").stat().st_ino


def test_missing_directory_has_no_siblings(tmp_path: Path) -> None:
    assert _names(Siblings(), tmp_path / "gone" / "app.log") == []
