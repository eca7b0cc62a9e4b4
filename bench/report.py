"""Printing figures: aligned tables, medians, ratios, and the lines each benchmark hands to the summary."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of the summary: what was measured, its value, and how it compares."""

    bench: str
    what: str
    value: str
    compare: str = ""


@dataclass(slots=True)
class Outcome:
    """What one benchmark hands back: its lines for the summary, and its figures for the JSON file and the picture.

    ``data`` holds only JSON values (dicts, lists, strings, numbers), keyed as :mod:`bench.plot` reads them.
    """

    figures: list[Figure]
    data: dict[str, object] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    """Median of the runs: one slow run on a shared machine should not move the figure."""
    return statistics.median(values)


def ratio(ours: float, theirs: float) -> str:
    """``ours / theirs`` as ``1.23x``, or ``n/a`` when the reference is zero or missing."""
    if theirs <= 0:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with right-aligned columns (the first column left-aligned)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([title, rule, line(headers), rule, *(line(row) for row in rows), rule, ""])


def show(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table at once, so a long benchmark shows its results as it goes."""
    print(table(title, headers, rows), flush=True)


def note(message: str) -> None:
    """Progress and skipped-benchmark notes go to stderr, leaving stdout for the figures."""
    print(message, file=sys.stderr, flush=True)
