"""A file is known by inode and head fingerprint, not by name."""

from __future__ import annotations

import os
from pathlib import Path

from sidecar.core.identity import FP_BYTES, Fingerprint, open_for_reading, read_head_of


def test_fingerprint_matches_the_same_content_grown() -> None:
    fp = Fingerprint.of(b"2026-11-23 first line\n")
    assert fp.matches(b"2026-11-23 first line\nsecond line\n")
    assert not fp.complete


def test_fingerprint_rejects_rewritten_or_shorter_content() -> None:
    fp = Fingerprint.of(b"2026-11-23 first line\n")
    assert not fp.matches(b"2026-11-24 other line\n")
    assert not fp.matches(b"2026")


def test_fingerprint_covers_at_most_fp_bytes() -> None:
    fp = Fingerprint.of(b"x" * (FP_BYTES * 2))
    assert fp.complete
    assert fp.length == FP_BYTES
    assert fp.matches(b"x" * FP_BYTES + b"different later")


def test_reading_a_followed_file_leaves_its_access_time_alone(tmp_path: Path) -> None:
    """relatime would update the access time on the first read after every write: an inode write from the
    event loop, which waits behind a busy disk's journal commit."""
    log = tmp_path / "app.log"
    log.write_bytes(b"a line\n" * 100)
    os.utime(log, ns=(1_000_000_000, log.stat().st_mtime_ns))
    fd = open_for_reading(str(log))
    try:
        assert os.read(fd, 1000).startswith(b"a line\n")
    finally:
        os.close(fd)
    assert read_head_of(str(log)) == b"a line\n" * 36 + b"a li"
    assert log.stat().st_atime_ns == 1_000_000_000
