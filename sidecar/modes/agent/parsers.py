"""Turning a line into record fields (``--parser``), and taking the event time from them (``--time-key``).

A parser returns the fields of a line, or ``None`` when the line does not have the expected shape; the
caller then ships the line unparsed under the message key and counts it: a line is never dropped for
its format. ``--parser none`` has no parser object at all, so the common case pays nothing here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from sidecar.errors import ConfigError

ParserName = Literal["none", "json", "regex", "logfmt"]
PARSER_NAMES: tuple[ParserName, ...] = ("none", "json", "regex", "logfmt")

Fields = dict[str, Any]


class Parser(Protocol):
    """Fields of one line (without its newline), or ``None`` when it does not parse."""

    def __call__(self, line: bytes) -> Fields | None: ...


def _text(line: bytes) -> str:
    # surrogateescape keeps bytes that are not UTF-8 and lets them go back out unchanged.
    return line.decode("utf-8", "surrogateescape")


def parse_json(line: bytes) -> Fields | None:
    """A JSON object line; any other JSON value (or none) does not parse."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter allows
        return None
    return value if isinstance(value, dict) else None


class RegexParser:
    """The named groups of ``--regex``; groups that did not take part are left out."""

    def __init__(self, pattern: str) -> None:
        try:
            self._regex = re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"--regex {pattern!r}: {error}") from None
        if not self._regex.groupindex:
            raise ConfigError(f"--regex {pattern!r} has no named group; write (?P<name>...) for each field")

    def __call__(self, line: bytes) -> Fields | None:
        match = self._regex.search(_text(line))
        if match is None:
            return None
        return {key: value for key, value in match.groupdict().items() if value is not None}


_LOGFMT_PAIR = re.compile(r'\s*([^\s=]+)(?:=("(?:[^"\\]|\\.)*"|[^\s"]*))?(?=\s|$)')


def parse_logfmt(line: bytes) -> Fields | None:
    """``key=value key2="quoted value" flag`` pairs; a bare key is ``True``.

    The whole line must consist of pairs, and at least one must have a value: otherwise any sentence
    would parse as a run of bare keys.
    """
    text = _text(line)
    fields: Fields = {}
    position = 0
    end = len(text.rstrip())
    while position < end:
        match = _LOGFMT_PAIR.match(text, position)
        if match is None:
            return None
        key, value = match.group(1), match.group(2)
        if value is None:
            fields[key] = True
        elif value.startswith('"'):
            fields[key] = re.sub(r"\\(.)", r"\1", value[1:-1])
        else:
            fields[key] = value
        position = match.end()
    if not any(value is not True for value in fields.values()):
        return None
    return fields


def make_parser(name: ParserName, regex: str | None) -> Parser | None:
    """The parser for ``--parser``; ``None`` for ``none``."""
    if name != "regex" and regex is not None:
        raise ConfigError(f"--regex is set but --parser is {name}; use --parser regex")
    if name == "none":
        return None
    if name == "json":
        return parse_json
    if name == "logfmt":
        return parse_logfmt
    if regex is None:
        raise ConfigError("--parser regex needs --regex with named groups, e.g. '^(?P<level>\\w+) (?P<msg>.*)$'")
    return RegexParser(regex)


class TimeReader:
    """Nanoseconds since the epoch from a parsed field, or ``None`` to fall back to the read time.

    Without ``--time-format`` a number is seconds since the epoch (fractions kept) and a string is
    either such a number or ISO 8601. With it, the string goes through :func:`datetime.strptime`. A time
    without a zone is UTC.
    """

    def __init__(self, key: str, time_format: str | None) -> None:
        self.key = key
        self._convert: Callable[[str], datetime] = (
            datetime.fromisoformat if time_format is None else lambda text: datetime.strptime(text, time_format)
        )

    def __call__(self, fields: Fields) -> int | None:
        value = fields.get(self.key)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            return _seconds_to_ns(value)
        if not isinstance(value, str):
            return None
        try:
            return _seconds_to_ns(Decimal(value))  # exact, unlike float: "1714557600.25" keeps its 250 ms
        except ArithmeticError:
            pass
        try:
            moment = self._convert(value.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - _EPOCH
        return _in_range((delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000


def _seconds_to_ns(seconds: float | Decimal) -> int | None:
    if not math.isfinite(seconds):
        return None
    return _in_range(int(seconds) * _NS if isinstance(seconds, int) else round(seconds * _NS))


def _in_range(time_ns: int) -> int | None:
    """``time_ns`` if an EventTime (unsigned 32-bit seconds) can carry it."""
    return time_ns if 0 <= time_ns < 2**32 * _NS else None


def make_time_reader(time_key: str | None, time_format: str | None, parser: ParserName) -> TimeReader | None:
    """The reader for ``--time-key``/``--time-format``, checked against ``--parser``."""
    if time_key is None:
        if time_format is not None:
            raise ConfigError("--time-format is set without --time-key; name the field that holds the time")
        return None
    if parser == "none":
        raise ConfigError("--time-key needs a --parser (json, regex or logfmt) that produces that field")
    return TimeReader(time_key, time_format)
