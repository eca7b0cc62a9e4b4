"""A file is known by inode and head fingerprint, not by name."""

from __future__ import annotations

from sidecar.core.identity import FP_BYTES, Fingerprint


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
