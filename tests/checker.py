"""Counts what happened to numbered lines: lost, duplicated, corrupted, or never written.

The sidecar's output is compared with the lines :mod:`tests.writer` produced. A line that parses as
``<stream> <seq> <payload>`` with the payload its number demands is intact; anything else on an
expected stream (a torn line, two lines glued together, a payload from the wrong offset) is corrupted.
Lines of streams the caller did not ask about are counted apart as ``foreign`` so that several writers,
or a probe line, can share one output.

Order is checked too, since stream mode promises the bytes of each file as they are: the first
appearance of each line must come after the first appearance of every lower-numbered line of the same
file (repeats, e.g. after a SIGKILL, are judged by ``may_duplicate``, not by order). Which lines shared a
file is the caller's knowledge (``files``, e.g. :attr:`tests.writer.LogWriter.files`); without it a
stream is taken as one file. Senders that promise no order (agent mode over several receivers) pass
``ordered=False``.

Tests assert ``report.ok`` and print :meth:`Report.summary` on failure; it names the first few
offending sequence numbers, which is usually enough to see the pattern (a whole generation missing,
a range repeated after a restart).

Run as a script to check an output file by hand::

    python -m tests.checker out.txt app:0-999
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.writer import payload

_LINE = re.compile(rb"^(\S+) (\d{8}) (.*)$", re.DOTALL)

Key = tuple[str, int]
Files = Mapping[str, Iterable[Iterable[int]]]


@dataclass
class Report:
    """The fate of each expected line, and what the output held besides."""

    counts: Counter[Key]
    lost: list[Key] = field(default_factory=list)
    duplicated: list[Key] = field(default_factory=list)
    corrupted: list[bytes] = field(default_factory=list)
    unexpected: list[Key] = field(default_factory=list)
    out_of_order: list[tuple[Key, Key]] = field(default_factory=list)
    foreign: int = 0

    @property
    def ok(self) -> bool:
        """Every expected line exactly once (or as allowed), in order, nothing corrupted or invented."""
        return not (self.lost or self.duplicated or self.corrupted or self.unexpected or self.out_of_order)

    @property
    def delivered(self) -> int:
        """Distinct expected lines seen at least once."""
        return len(self.counts)

    def summary(self) -> str:
        """One paragraph naming counts and the first offenders of each kind."""

        def first(keys: list[Key]) -> str:
            return ", ".join(f"{s}:{n}" for s, n in sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "")

        parts = [f"delivered={self.delivered} total_lines={sum(self.counts.values())} foreign={self.foreign}"]
        if self.lost:
            parts.append(f"lost={len(self.lost)} [{first(self.lost)}]")
        if self.duplicated:
            parts.append(f"duplicated={len(self.duplicated)} [{first(self.duplicated)}]")
        if self.unexpected:
            parts.append(f"unexpected={len(self.unexpected)} [{first(self.unexpected)}]")
        if self.out_of_order:
            shown = ", ".join(f"{s}:{n} after {s}:{m}" for (s, n), (_, m) in self.out_of_order[:8])
            more = " ..." if len(self.out_of_order) > 8 else ""
            parts.append(f"out_of_order={len(self.out_of_order)} [{shown}{more}] (judged within each file:"
                         " a stream written into several files needs check(files=...), e.g. LogWriter.files)")
        if self.corrupted:
            shown = "; ".join(repr(line[:120]) for line in self.corrupted[:5])
            parts.append(f"corrupted={len(self.corrupted)} [{shown}]")
        return " ".join(parts)


def split_lines(output: bytes) -> list[bytes]:
    """The output's lines without their newline; a trailing unterminated piece counts as a line."""
    lines = output.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


@dataclass
class Parsed:
    """The intact lines of the streams asked about (counted, and in output order), and the rest."""

    counts: Counter[Key] = field(default_factory=Counter)
    order: list[Key] = field(default_factory=list)
    corrupted: list[bytes] = field(default_factory=list)
    foreign: int = 0


def parse(output: bytes, streams: Iterable[str]) -> tuple[Counter[Key], list[bytes], int]:
    """Count intact lines of ``streams``; return them, the corrupted lines, and the foreign count."""
    parsed = scan(output, streams)
    return parsed.counts, parsed.corrupted, parsed.foreign


def scan(output: bytes, streams: Iterable[str]) -> Parsed:
    """:func:`parse`, also keeping the intact lines in the order they came out."""
    wanted = {s.encode() for s in streams}
    parsed = Parsed()
    counts, order, corrupted = parsed.counts, parsed.order, parsed.corrupted
    for line in split_lines(output):
        match = _LINE.match(line)
        if match is None:
            corrupted.append(line)
            continue
        stream_bytes, number, body = match.groups()
        if stream_bytes not in wanted:
            if any(w in line for w in wanted):  # another line glued onto ours
                corrupted.append(line)
            else:
                parsed.foreign += 1
            continue
        stream, seq = stream_bytes.decode(), int(number)
        if body != payload(stream, seq):
            corrupted.append(line)
        else:
            counts[(stream, seq)] += 1
            order.append((stream, seq))
    if output and not output.endswith(b"\n"):
        corrupted.append(b"<output does not end in a newline>")
    return parsed


def out_of_order(order: Iterable[Key], files: Mapping[Key, int]) -> list[tuple[Key, Key]]:
    """Lines whose first appearance follows a higher-numbered line of the same file, each with that line.

    ``files`` names the file of each line; lines it does not name are not judged.
    """
    seen: set[Key] = set()
    highest: dict[int, Key] = {}
    found: list[tuple[Key, Key]] = []
    for key in order:
        if key in seen:
            continue
        seen.add(key)
        file = files.get(key)
        if file is None:
            continue
        top = highest.get(file)
        if top is not None and top[1] > key[1]:
            found.append((key, top))
        else:
            highest[file] = key
    return found


def _file_of(expected: Mapping[str, Iterable[int]], files: Files | None) -> dict[Key, int]:
    """Each expected line's file number: from ``files`` where given, else one file per stream."""
    given = files or {}
    file_of: dict[Key, int] = {}
    number = 0
    for stream, seqs in expected.items():
        for group in given.get(stream, [seqs]):
            file_of.update(((stream, seq), number) for seq in group)
            number += 1
    return file_of


def check(
    output: bytes,
    expected: Mapping[str, Iterable[int]],
    *,
    may_lose: Mapping[str, Iterable[int]] | None = None,
    may_duplicate: Mapping[str, Iterable[int]] | None = None,
    files: Files | None = None,
    ordered: bool = True,
) -> Report:
    """Compare ``output`` with the lines written per stream.

    ``may_lose`` are written lines whose absence is allowed (bytes destroyed before they could be read);
    ``may_duplicate`` are lines allowed to appear more than once (read again after a SIGKILL).
    Lines in ``may_lose`` count as expected when they do appear. ``files`` groups a stream's lines by the
    file that held them, for the order check (see the module docstring); ``ordered=False`` skips it.
    """
    expected = {s: list(seqs) for s, seqs in expected.items()}
    want = {(s, n) for s, seqs in expected.items() for n in seqs}
    optional = {(s, n) for s, seqs in (may_lose or {}).items() for n in seqs}
    repeatable = {(s, n) for s, seqs in (may_duplicate or {}).items() for n in seqs}
    streams = set(expected) | set(may_lose or {})
    parsed = scan(output, streams)
    counts = parsed.counts
    return Report(
        counts=counts,
        lost=sorted(want - optional - set(counts)),
        duplicated=sorted(k for k, c in counts.items() if c > 1 and k not in repeatable),
        corrupted=parsed.corrupted,
        unexpected=sorted(set(counts) - want - optional),
        out_of_order=out_of_order(parsed.order, _file_of(expected, files)) if ordered else [],
        foreign=parsed.foreign,
    )


def assert_exactly_once(
    output: bytes,
    expected: Mapping[str, Iterable[int]],
    *,
    may_lose: Mapping[str, Iterable[int]] | None = None,
    may_duplicate: Mapping[str, Iterable[int]] | None = None,
    files: Files | None = None,
    ordered: bool = True,
) -> Report:
    """:func:`check`, failing the test with the report's summary unless every line came out exactly once."""
    report = check(output, expected, may_lose=may_lose, may_duplicate=may_duplicate, files=files, ordered=ordered)
    assert report.ok, report.summary()
    return report


def delivered(output: bytes, expected: Mapping[str, Iterable[int]]) -> bool:
    """Whether every expected line is in the output at least once; a progress probe for waits."""
    counts, _, _ = parse(output, expected)
    return all((stream, seq) in counts for stream, seqs in expected.items() for seq in seqs)


def lines_in_files(paths: Iterable[Path], stream: str) -> set[int]:
    """Sequence numbers of the intact lines of ``stream`` in these files: what survived on disk."""
    found: set[int] = set()
    for path in paths:
        counts, _, _ = parse(path.read_bytes(), [stream])
        found.update(seq for _, seq in counts)
    return found


def _parse_range(text: str) -> tuple[str, range]:
    stream, _, span = text.rpartition(":")
    low, _, high = span.partition("-")
    return stream, range(int(low), int(high or low) + 1)


def main() -> int:
    """Check an output file against ``STREAM:FIRST-LAST`` ranges; exit 1 when not exactly once."""
    parser = argparse.ArgumentParser(description="Count lost, duplicated and corrupted numbered lines.")
    parser.add_argument("output", type=Path)
    parser.add_argument("ranges", nargs="+", help="STREAM:FIRST-LAST, e.g. app:0-999")
    args = parser.parse_args()
    expected: dict[str, list[int]] = {}
    for text in args.ranges:
        stream, seqs = _parse_range(text)
        expected.setdefault(stream, []).extend(seqs)
    report = check(args.output.read_bytes(), expected)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
