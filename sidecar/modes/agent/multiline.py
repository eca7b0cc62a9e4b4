"""Joining the lines of one event (a stack trace) into one record (``--multiline``).

A :class:`Rule` looks at each line in file order and says whether it continues the event begun before
it; a :class:`Grouper` (one per file, since rules keep state such as "inside a traceback") collects the
lines into groups. A group is complete only when the next event's first line arrives, so the sink
flushes a group that has waited ``--multiline-timeout`` for that line. Groups are bounded in lines and
bytes: a group that would grow past a bound is closed and the rest of the event starts a new group
(counted, never dropped), so memory stays bounded whatever the application writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Protocol

from sidecar.errors import ConfigError


class Rule(Protocol):
    """Whether ``line`` continues the event of the lines before it."""

    def __call__(self, line: bytes) -> bool: ...


RuleFactory = Callable[[], Rule]


class StartRule:
    """``--multiline-start``: a line matching the regex begins an event; any other line continues one."""

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self._search = regex.search

    def __call__(self, line: bytes) -> bool:
        return self._search(line) is None


_JAVA_CONTINUATION = re.compile(
    rb"^(?:\s+at\s"  # frame
    rb"|\s+\.\.\.\s*\d+\s+(?:more|common frames omitted)"  # elided frames
    rb"|\s*(?:Caused by|Suppressed):"  # nested cause
    rb"|(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)(?::.*)?$)"  # exception header
)


class JavaRule:
    """Java/JVM stack traces: frames, ``... N more``, ``Caused by:``, and the exception header line
    that follows the logged message."""

    def __call__(self, line: bytes) -> bool:
        return _JAVA_CONTINUATION.match(line) is not None


_PYTHON_EXCEPTION = re.compile(rb"^[A-Za-z_][\w.]*(?::.*)?$")
_PYTHON_CHAIN = (b"During handling of the above exception", b"The above exception was the direct cause")


class PythonRule:
    """Python tracebacks, joined to the logged message before them, chained exceptions included.

    Blank lines right after a traceback's exception line stay in the group (they separate chained
    tracebacks); they are shipped inside it, not lost.
    """

    def __init__(self) -> None:
        self._in_traceback = False
        self._after_exception = False

    def __call__(self, line: bytes) -> bool:
        if line.startswith(b"Traceback (most recent call last):"):
            self._in_traceback, self._after_exception = True, False
            return True
        if self._in_traceback:
            if line[:1] in (b" ", b"\t"):
                return True
            self._in_traceback = False
            self._after_exception = _PYTHON_EXCEPTION.match(line) is not None
            return self._after_exception
        if self._after_exception and (not line.strip() or line.startswith(_PYTHON_CHAIN)):
            return True
        self._after_exception = False
        return False


_GO_TRACE_LINE = re.compile(
    rb"^(?:$"  # blank lines between sections
    rb"|\t"  # file:line of a frame
    rb"|goroutine \d+ \["  # goroutine header
    rb"|\[signal "  # signal description
    rb"|created by "  # goroutine origin
    rb"|exit status \d+$"
    rb"|[\w./*()\[\]-]+\(.*\)$)"  # function of a frame
)


class GoRule:
    """Go panics and fatal errors: ``panic:`` begins an event that runs through the goroutine dumps."""

    def __init__(self) -> None:
        self._in_panic = False

    def __call__(self, line: bytes) -> bool:
        if line.startswith((b"panic: ", b"fatal error: ")):
            self._in_panic = True
            return False
        if self._in_panic and _GO_TRACE_LINE.match(line):
            return True
        self._in_panic = False
        return False


PRESETS: dict[str, RuleFactory] = {"java": JavaRule, "python": PythonRule, "go": GoRule}


def make_rule_factory(preset: str | None, start: str | None) -> RuleFactory | None:
    """The rule for ``--multiline``/``--multiline-start`` (at most one of them); ``None`` when off."""
    if preset is not None and start is not None:
        raise ConfigError("--multiline and --multiline-start both set; choose a preset or your own regex")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"--multiline {preset!r}: unknown preset; use {', '.join(PRESETS)}")
        return PRESETS[preset]
    if start is None:
        return None
    try:
        regex = re.compile(start.encode())
    except re.error as error:
        raise ConfigError(f"--multiline-start {start!r}: {error}") from None
    return lambda: StartRule(regex)


class Grouper:
    """The lines of one file grouped into events, holding the last, possibly incomplete, group.

    ``split`` counts groups closed early at a bound (the ``multiline_truncated`` metric).
    """

    def __init__(self, rule: Rule, max_lines: int, max_bytes: int) -> None:
        self._rule = rule
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._bytes = 0
        self.split = 0
        self.updated = 0.0

    @property
    def pending(self) -> bool:
        """Whether an incomplete group is held."""
        return bool(self._lines)

    def feed(self, lines: Iterable[bytes], now: float) -> list[bytes]:
        """Add lines in file order; return the groups they completed, each joined with ``\\n``."""
        done: list[bytes] = []
        rule = self._rule
        group = self._lines
        size = self._bytes
        for line in lines:
            continues = rule(line)
            if group and continues and len(group) < self._max_lines and size + len(line) < self._max_bytes:
                group.append(line)
                size += len(line) + 1
                continue
            if group:
                if continues:
                    self.split += 1
                done.append(b"\n".join(group))
            group = [line]
            size = len(line)
        self._lines, self._bytes = group, size
        self.updated = now
        return done

    def flush(self) -> bytes | None:
        """Give up waiting for the held group's end: return it (or ``None`` when nothing is held)."""
        if not self._lines:
            return None
        group = b"\n".join(self._lines)
        self._lines, self._bytes = [], 0
        return group
