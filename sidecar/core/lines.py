"""Cutting a read buffer into complete lines without touching them one by one.

The hot path finds the last newline with one ``rfind`` (``memrchr``) and counts lines with StringZilla's
SIMD kernels, in whichever of two ways is cheaper on this CPU for lines as long as the last ones. CPython's
``bytes.count`` of one byte is a plain loop (0.4-0.8 CPU-s per GB), once the largest cost of a catch-up.
StringZilla's ``count`` of one byte costs ~11 ns per newline found (0.08-0.13 s/GB for 100-byte lines).
Mapping every byte to 0 or 1 (``translate``) into a 64 KiB block that stays in the CPU's cache and summing
the block (``bytesum``) costs per byte, whatever the lines: ~0.05 s/GB where AVX-512 does the table lookup
in one instruction, ~0.15-0.24 where AVX2 needs a dozen. :class:`NewlineCounter` times both once per
process and picks per call. Only a line longer than ``max_line`` (which the caller guarantees can only be
the first one in the buffer, by never reading more than ``max_line`` new bytes at once) costs extra work.
"""

from __future__ import annotations

import functools
import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass

import stringzilla

Buffer = bytearray | mmap.mmap
"""What lines are framed in: the core's read buffer (a memory map) or, in tests, a ``bytearray``."""


@dataclass(slots=True)
class Piece:
    """Lines ready to emit. ``start == -1`` means ``data`` is not a verbatim slice of the buffer."""

    data: memoryview
    lines: int
    start: int
    end: int


COUNT_BLOCK = 64 * 1024
"""Bytes mapped and summed at a time: large enough that the two calls cost little, small enough for the
block to stay in cache between the two passes."""

_FEW_BYTES = 8 * 1024
"""Below this, one ``count`` call costs less than a ``translate`` and a ``bytesum``."""

_ONE_PER_NEWLINE = bytes(1 if byte == 0x0A else 0 for byte in range(256))


@dataclass(frozen=True, slots=True)
class CountCosts:
    """What counting costs here, in seconds: per newline found by ``count``, per byte mapped and summed."""

    per_newline: float
    per_byte: float


_SAMPLE_LINE = b"." * 99 + b"\n"
_TIMINGS = 5


@functools.cache
def measured_costs() -> CountCosts:
    """Both ways timed on 64 KiB of 100-byte lines, best of a few (~1 ms, once per process): which one wins
    depends on the CPU's vector unit, which no flag names reliably."""
    sample = bytearray((_SAMPLE_LINE * (COUNT_BLOCK // len(_SAMPLE_LINE) + 1))[:COUNT_BLOCK])
    block = bytearray(COUNT_BLOCK)
    newlines = sample.count(b"\n")

    def best(way: Callable[[], object]) -> float:
        timings = []
        for _ in range(_TIMINGS):
            began = time.perf_counter()
            way()
            timings.append(time.perf_counter() - began)
        return min(timings)

    def by_map() -> int:
        stringzilla.translate(sample, _ONE_PER_NEWLINE, out=block)
        mapped: int = stringzilla.bytesum(block)
        return mapped

    by_count = best(lambda: stringzilla.count(sample, "\n"))
    mapping = best(by_map)
    return CountCosts(by_count / newlines, mapping / COUNT_BLOCK)


class NewlineCounter:
    """Counts ``\\n`` in a range of a buffer exactly, in place; owns the block the bytes are mapped into.

    Lines in one stream tend to be alike, so the last range's density of newlines predicts the next one's:
    ``count`` is used while that density times its cost per newline is below the per-byte cost of mapping.
    """

    __slots__ = ("_block", "_costs", "_density", "_view")

    def __init__(self, costs: CountCosts | None = None) -> None:
        self._block = bytearray(COUNT_BLOCK)
        self._view = memoryview(self._block)
        self._costs = costs or measured_costs()
        self._density = 1 / len(_SAMPLE_LINE)

    def count(self, buf: bytearray | memoryview, start: int, end: int) -> int:
        if end - start < _FEW_BYTES:
            few: int = stringzilla.count(buf, "\n", start, end)
            return few
        if self._density * self._costs.per_newline < self._costs.per_byte:
            total: int = stringzilla.count(buf, "\n", start, end)
        else:
            total = self._mapped(buf, start, end)
        self._density = total / (end - start)
        return total

    def _mapped(self, buf: bytearray | memoryview, start: int, end: int) -> int:
        block, view, translate, bytesum = self._block, self._view, stringzilla.translate, stringzilla.bytesum
        total = 0
        for first in range(start, end, COUNT_BLOCK):
            last = min(first + COUNT_BLOCK, end)
            translate(buf, _ONE_PER_NEWLINE, out=block, start=first, end=last)
            total += bytesum(block if last - first == COUNT_BLOCK else view[: last - first])
        return total


def utf8_cut(buf: Buffer, cut: int, floor: int) -> int:
    """Move ``cut`` back (at most 3 bytes, never to ``floor`` or below) so that it does not split a UTF-8 sequence.

    Where no sequence start is that near (the bytes are not UTF-8), ``cut`` stays where it was.
    """
    for pos in range(cut, max(cut - 3, floor + 1) - 1, -1):
        if buf[pos] & 0xC0 != 0x80:
            return pos
    return cut


def frame(buf: Buffer, view: memoryview, total: int, max_line: int, counter: NewlineCounter, begin: int = 0
          ) -> tuple[list[Piece], int]:
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
        pieces.append(Piece(view[begin:end], counter.count(view, begin, end), begin, end))
        begin = end
    return pieces, begin
