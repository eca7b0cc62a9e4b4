"""One read of a tail on a real file: what it returns, and how many system calls it takes to know the
file still holds what we read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core import tail as tail_module
from sidecar.core.identity import FP_BYTES, FileKey, Fingerprint, read_head
from sidecar.core.tail import Chunk, ReadBuffer, Tail, Truncated


class _Heads:
    """Counts the reads of a file's head that :meth:`Tail.read` makes besides the one of what is new."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(tail_module, "read_head", self._read_head)

    def _read_head(self, fd: int) -> bytes:
        self.calls += 1
        return read_head(fd)


def _open(path: Path) -> Tail:
    fd = os.open(path, os.O_RDONLY)
    st_ = os.fstat(fd)
    return Tail(FileKey(st_.st_dev, st_.st_ino), fd, str(path), str(path), 0, Fingerprint.of(read_head(fd)),
                lambda _: None)


@pytest.fixture
def buffer() -> ReadBuffer:
    return ReadBuffer(max_line=1 << 16, read_chunk=1 << 16)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, Tail]]:
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    tail = _open(path)
    yield path, tail
    os.close(tail.fd)


def _text(chunk: Chunk | Truncated | None) -> bytes:
    assert not isinstance(chunk, Truncated)
    return b"" if chunk is None else b"".join(bytes(piece.data) for piece in chunk.pieces)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def _rewrite(path: Path, data: bytes) -> None:
    """Replace the content in place, the same inode (as a program that rewrites its file does)."""
    with path.open("r+b") as out:
        out.write(data)
        out.truncate()


def test_a_small_file_rewritten_with_a_new_head_and_the_same_last_bytes_is_a_truncation(
    opened: tuple[Path, Tail], buffer: ReadBuffer
) -> None:
    """The marker (the 64 bytes before our position) cannot see this rewrite; the head can."""
    path, tail = opened
    same_end = b"".join(b"the same line %02d\n" % n for n in range(6))
    _append(path, b"first version\n" + same_end)
    _text(tail.read(buffer))
    _rewrite(path, b"SECOND version\n"[:14] + same_end + b"and a new line\n")
    result = tail.read(buffer)
    assert isinstance(result, Truncated)
    assert result.head == path.read_bytes()[:FP_BYTES]


def test_a_small_file_now_shorter_than_our_position_is_a_truncation_with_its_new_head(
    opened: tuple[Path, Tail], buffer: ReadBuffer
) -> None:
    path, tail = opened
    _append(path, b"one\ntwo\nthree\n")
    _text(tail.read(buffer))
    _rewrite(path, b"new\n")
    result = tail.read(buffer)
    assert isinstance(result, Truncated)
    assert result.head == b"new\n"


def test_a_large_file_is_checked_by_its_marker_alone(
    opened: tuple[Path, Tail], buffer: ReadBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, tail = opened
    _append(path, b"x" * 99 + b"\n" * 5 + b"y" * 400 + b"\n")
    _text(tail.read(buffer))
    heads = _Heads(monkeypatch)
    for n in range(20):
        _append(path, b"line %d\n" % n)
        assert _text(tail.read(buffer)) == b"line %d\n" % n
    assert heads.calls == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(1, 60), st.booleans()), min_size=1, max_size=10),
    damage=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
)
def test_a_growing_small_file_is_read_whole_and_a_byte_changed_in_its_head_or_marker_is_seen(
    tmp_path: Path, buffer: ReadBuffer, steps: list[tuple[int, bool]], damage: float | None
) -> None:
    """Appends of any size (a line or a partial one), read after each; then one byte changed where the
    marker, or the head while the fingerprint still grows, covers it must read as a truncation, and an
    untouched file reads nothing."""
    path = tmp_path / "grow.log"
    path.write_bytes(b"")
    tail = _open(path)
    try:
        content, out = b"", b""
        for size, ends_line in steps:
            piece = (b"%d-" % len(content) * size)[:size - 1] + (b"\n" if ends_line else b"-")
            _append(path, piece)
            content += piece
            out += _text(tail.read(buffer))
        assert out == content[: content.rfind(b"\n") + 1]
        assert tail.fp == Fingerprint.of(content[:FP_BYTES])
        if damage is None:
            assert tail.read(buffer) is None
            return
        head = range(0 if tail.fp.complete else min(tail.pos, FP_BYTES))
        covered = [*head, *range(max(tail.pos - len(tail.before), 0), tail.pos)]
        at = covered[int(damage * len(covered))]
        _rewrite(path, content[:at] + bytes([content[at] ^ 0x20]) + content[at + 1 :])
        assert isinstance(tail.read(buffer), Truncated)
    finally:
        os.close(tail.fd)


def test_a_sweep_by_size_passes_over_a_file_read_to_its_end_whose_times_moved_but_not_one_that_grew_or_shrank(
        opened: tuple[Path, Tail], buffer: ReadBuffer) -> None:
    path, tail = opened
    _append(path, b"one\n")
    assert _text(tail.read(buffer)) == b"one\n"
    tail.unchanged()
    assert tail.unchanged()
    os.utime(path, ns=(1, 1))
    assert not tail.unchanged(), "a poll by times reads a file whose times moved"
    assert tail.unchanged(by_size=True)
    _append(path, b"two\n")
    assert not tail.unchanged(by_size=True)
    assert _text(tail.read(buffer)) == b"two\n"
    assert tail.unchanged(by_size=True)
    os.truncate(path, 2)
    assert not tail.unchanged(by_size=True)
