"""Framing a read buffer into complete lines: the hot path's only per-byte logic."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sidecar.core.lines import COUNT_BLOCK, CountCosts, NewlineCounter, Piece, frame, measured_costs, utf8_cut


def _frame(data: bytes, max_line: int) -> tuple[list[Piece], bytes]:
    buf = bytearray(data)
    pieces, rest = frame(buf, memoryview(buf), len(buf), max_line, NewlineCounter())
    return pieces, bytes(buf[rest:])


def _texts(pieces: list[Piece]) -> list[bytes]:
    return [bytes(p.data) for p in pieces]


def test_complete_lines_come_out_and_the_partial_stays() -> None:
    pieces, rest = _frame(b"a\nbb\r\n\nccc", 100)
    assert _texts(pieces) == [b"a\nbb\r\n\n"]
    assert rest == b"ccc"
    assert [p.lines for p in pieces] == [3]


def test_buffer_without_newline_emits_nothing() -> None:
    assert _frame(b"partial", 100) == ([], b"partial")


def test_long_line_is_split_on_a_utf8_boundary() -> None:
    line = "é".encode() * 10
    pieces, rest = _frame(line + b"\n", 5)
    out = _texts(pieces)
    assert out == [b"\xc3\xa9\xc3\xa9\n"] * 5
    assert rest == b""
    assert [p.lines for p in pieces] == [1] * 5


def test_newlines_are_counted_exactly_across_simd_block_edges() -> None:
    """SIMD counters work in blocks of 16-64 bytes: newlines on, before and after every edge all count."""
    buf = bytearray(b"x" * 300)
    for pos in (0, 15, 16, 31, 32, 63, 64, 65, 127, 128, 255, 299):
        buf[pos] = 0x0A
    for start in range(0, 70):
        for end in (start, start + 1, 64, 128, 129, 256, 300):
            if end >= start:
                assert NewlineCounter().count(buf, start, end) == buf.count(b"\n", start, end)


ALWAYS_MAP = CountCosts(per_newline=1.0, per_byte=0.0)
ALWAYS_COUNT = CountCosts(per_newline=0.0, per_byte=1.0)


@pytest.mark.parametrize("costs", [ALWAYS_MAP, ALWAYS_COUNT], ids=["mapped", "counted"])
def test_newlines_are_counted_exactly_across_the_counters_own_blocks(costs: CountCosts) -> None:
    """Large ranges are mapped and summed a block at a time, from any start: every edge counts once."""
    size = 3 * COUNT_BLOCK + 777
    buf = bytearray(b"y" * size)
    marks = [0, 1, 8191, 8192, COUNT_BLOCK - 1, COUNT_BLOCK, COUNT_BLOCK + 1, 2 * COUNT_BLOCK, size - 1]
    for pos in marks:
        buf[pos] = 0x0A
    counter = NewlineCounter(costs)
    for start in (0, 1, 2, 8191, COUNT_BLOCK - 1, COUNT_BLOCK):
        for reach in (8191, 8192, COUNT_BLOCK, COUNT_BLOCK + 1, size):
            end = min(start + reach, size)
            assert counter.count(buf, start, end) == buf.count(b"\n", start, end), (start, end)


@given(st.binary(min_size=0, max_size=300_000), st.integers(min_value=0, max_value=300_000))
@example(bytes(range(256)) * 1024, 3)
def test_newline_count_matches_bytes_count_for_any_bytes_either_way(data: bytes, start: int) -> None:
    buf = bytearray(data)
    start = min(start, len(buf))
    for costs in (ALWAYS_MAP, ALWAYS_COUNT, measured_costs()):
        assert NewlineCounter(costs).count(buf, start, len(buf)) == buf.count(b"\n", start)


def test_the_counter_maps_dense_newlines_and_counts_sparse_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``count`` costing as much per newline as mapping 60 bytes, ranges of shorter lines are mapped. The
    way follows the last range's lines, so the first range after a change of length still goes the old way."""
    mapped: list[bool] = []
    real = NewlineCounter._mapped

    def recording(self: NewlineCounter, buf: bytearray, start: int, end: int) -> int:
        mapped[-1] = True
        return real(self, buf, start, end)

    monkeypatch.setattr(NewlineCounter, "_mapped", recording)
    counter = NewlineCounter(CountCosts(per_newline=60.0, per_byte=1.0))
    short, long = bytearray(b"x" * 49 + b"\n") * 2000, bytearray(b"y" * 299 + b"\n") * 400
    for buf in (short, short, long, long, short, short):
        mapped.append(False)
        assert counter.count(buf, 0, len(buf)) == buf.count(b"\n")
    assert mapped == [False, True, True, False, False, True]


def test_counting_costs_are_measured_once_per_process() -> None:
    costs = measured_costs()
    assert costs is measured_costs()
    assert costs.per_newline > 0
    assert costs.per_byte > 0


def test_utf8_cut_moves_back_to_the_start_of_the_sequence_it_would_split() -> None:
    buf = bytearray("a€b".encode())  # € is e2 82 ac at 1..3
    assert [utf8_cut(buf, cut, 0) for cut in range(1, 5)] == [1, 1, 1, 4]


def test_utf8_cut_never_moves_more_than_three_bytes() -> None:
    buf = bytearray(b"\x80" * 10)
    assert utf8_cut(buf, 8, 0) == 8


def test_utf8_cut_never_moves_to_the_floor() -> None:
    buf = bytearray("€".encode() + b"x")
    assert utf8_cut(buf, 2, 0) == 2


@given(st.text(max_size=40), st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_utf8_cut_moves_to_the_sequence_start_unless_that_is_the_floor(text: str, cut_at: int, floor_at: int) -> None:
    data = text.encode() + b"\n"
    cut = cut_at % len(data)
    floor = min(floor_at % len(data), max(cut - 1, 0))
    start = max(pos for pos in range(cut + 1) if data[pos] & 0xC0 != 0x80)
    assert utf8_cut(bytearray(data), cut, floor) == (start if start > floor else cut)


def _first_line_may_be_long(max_line: int) -> st.SearchStrategy[bytes]:
    """A buffer as the core fills it: a carried partial line (no newline, at most ``max_line`` bytes, as
    ``frame`` leaves it) and one read of at most ``max_line`` bytes, so only the first line can be long."""
    carried = st.binary(max_size=max_line).map(lambda b: b.replace(b"\n", b""))
    read = st.lists(st.sampled_from([b"\n", b"\r", b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\x80"]),
                    max_size=max_line).map(lambda parts: b"".join(parts)[:max_line])
    return st.tuples(carried, read).map(lambda pair: pair[0] + pair[1])


@st.composite
def _buffers(draw: st.DrawFn) -> tuple[bytes, int]:
    max_line = draw(st.integers(min_value=1, max_value=48))
    return draw(_first_line_may_be_long(max_line)), max_line


@given(_buffers())
@example((b"a" * 30 + b"\n" + b"bb\nc", 8))
@example((b"\xe2\x82\xac" * 9 + b"\n\n", 4))
def test_framing_loses_and_invents_nothing_and_bounds_every_line(case: tuple[bytes, int]) -> None:
    data, max_line = case
    pieces, rest = _frame(data, max_line)
    rebuilt = b"".join(bytes(p.data[:-1]) if p.start < 0 else bytes(p.data) for p in pieces) + rest
    assert rebuilt == data
    assert b"\n" not in rest
    assert len(rest) <= max_line
    for piece in pieces:
        text = bytes(piece.data)
        assert text.endswith(b"\n")
        assert piece.lines == text.count(b"\n")
        assert all(len(line) <= max_line for line in text.split(b"\n")[:-1])
        if piece.start >= 0:
            assert text == data[piece.start : piece.end]
        else:
            assert piece.lines == 1
    assert sum(p.lines for p in pieces) == data.count(b"\n") + sum(p.start < 0 for p in pieces)


@given(st.text(max_size=40).map(lambda t: t.replace("\n", "")), st.integers(min_value=4, max_value=24))
def test_a_long_utf8_line_is_split_into_valid_utf8_pieces_of_nearly_max_line(line: str, max_line: int) -> None:
    pieces, rest = _frame(line.encode() + b"\n", max_line)
    assert rest == b""
    assert b"".join(bytes(p.data).removesuffix(b"\n") for p in pieces) == line.encode()
    for piece in pieces:
        assert len(piece.data) - 1 <= max_line
        bytes(piece.data).decode()
        if piece.start < 0:
            assert len(piece.data) - 1 >= max_line - 3
