"""Cutting a read buffer into complete lines without touching them one by one.

The hot path finds the last newline with one ``rfind`` (``memrchr``) and counts lines with one SIMD
count (StringZilla): CPython's ``bytes.count`` of one byte is a plain loop, about 0.36 CPU-s per GB
here against ~0.1 for StringZilla, and it was the largest cost of a catch-up. Only a line longer than
``max_line`` (which the caller guarantees can only be the first one in the buffer, by never reading
more than ``max_line`` new bytes at once) costs extra work.
"""

from __future__ import annotations

from dataclasses import dataclass

import stringzilla


@dataclass(slots=True)
class Piece:
    """Lines ready to emit. ``start == -1`` means ``data`` is not a verbatim slice of the buffer."""

    data: memoryview
    lines: int
    start: int
    end: int


def count_newlines(buf: bytearray, start: int, end: int) -> int:
    """How many ``\\n`` are in ``buf[start:end]``, counted in place with SIMD (no copy, no slice)."""
    found: int = stringzilla.count(buf, "\n", start, end)
    return found


def utf8_cut(buf: bytearray, cut: int, floor: int) -> int:
    """Move ``cut`` back (at most 3 bytes, never to ``floor`` or below) so that it does not split a UTF-8 sequence.

    Where no sequence start is that near (the bytes are not UTF-8), ``cut`` stays where it was.
    """
    for pos in range(cut, max(cut - 3, floor + 1) - 1, -1):
        if buf[pos] & 0xC0 != 0x80:
            return pos
    return cut


def frame(buf: bytearray, view: memoryview, total: int, max_line: int, begin: int = 0) -> tuple[list[Piece], int]:
    """Split ``buf[begin:total]`` into pieces of complete lines; return them and where the incomplete rest starts.

    A line whose content exceeds ``max_line`` bytes is cut on a UTF-8 boundary into pieces that each get
    a ``\\n`` of their own, so that memory stays bounded whatever the application writes.
    """
    pieces: list[Piece] = []
    while total - begin > max_line:  # shorter, no line in it can be too long
        newline = buf.find(b"\n", begin, total)
        content_end = newline if newline >= 0 else total
        if content_end - begin <= max_line:
            break
        cut = utf8_cut(buf, begin + max_line, begin)
        pieces.append(Piece(memoryview(bytes(buf[begin:cut]) + b"\n"), 1, -1, cut))
        begin = cut
    end = buf.rfind(b"\n", begin, total) + 1
    if end > begin:
        pieces.append(Piece(view[begin:end], count_newlines(buf, begin, end), begin, end))
        begin = end
    return pieces, begin
