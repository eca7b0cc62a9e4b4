"""Framing a read buffer into complete lines: the hot path's only per-byte logic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.lines import frame, utf8_cut


def _frame(data: bytes, max_line: int) -> tuple[list[bytes], bytes, int]:
    buf = bytearray(data)
    pieces, rest = frame(buf, memoryview(buf), len(buf), max_line)
    return [bytes(p.data) for p in pieces], bytes(buf[rest:]), sum(p.lines for p in pieces)


def test_complete_lines_come_out_and_the_partial_stays() -> None:
    out, rest, lines = _frame(b"a\nbb\r\n\nccc", 100)
    assert out == [b"a\nbb\r\n\n"]
    assert rest == b"ccc"
    assert lines == 3


def test_buffer_without_newline_emits_nothing() -> None:
    assert _frame(b"partial", 100) == ([], b"partial", 0)


def test_long_line_is_split_on_a_utf8_boundary() -> None:
    line = "é".encode() * 10
    out, rest, lines = _frame(line + b"\n", 5)
    assert all(len(piece) <= 6 for piece in out)
    assert b"".join(piece.removesuffix(b"\n") for piece in out) == line
    for piece in out:
        piece.decode("utf-8")
    assert rest == b""
    assert lines == len(out)


def test_utf8_cut_never_moves_more_than_three_bytes() -> None:
    buf = bytearray(b"\x80" * 10)
    assert utf8_cut(buf, 8, 0) == 8


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), st.integers(min_value=4, max_value=64))
def test_framing_loses_and_invents_nothing(lines: list[bytes], tail: bytes, max_line: int) -> None:
    data = b"".join(line + b"\n" for line in lines) + tail
    if len(tail) > max_line:
        return
    out, rest, count = _frame(data, max_line)
    assert b"".join(out).replace(b"\n", b"") + rest == data.replace(b"\n", b"")
    assert rest == tail
    assert count == b"".join(out).count(b"\n")
    assert all(len(piece) - 1 <= max_line for piece in out if b"\n" not in piece[:-1])
