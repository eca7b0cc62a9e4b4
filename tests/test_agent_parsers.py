"""Line parsers (json, regex, logfmt), event times taken from fields, and their option checks."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.modes.agent.parsers import (
    RegexParser,
    TimeReader,
    make_parser,
    make_time_reader,
    parse_json,
    parse_logfmt,
)

T0 = 1714557600  # 2024-05-01T10:00:00Z


def test_json_object_lines_parse_and_anything_else_does_not() -> None:
    assert parse_json(b'{"level":"info","n":2,"nested":{"a":[1]}}') == {
        "level": "info",
        "n": 2,
        "nested": {"a": [1]},
    }
    for line in (b"plain text", b"[1,2]", b'"string"', b"", b'{"unterminated":', b"\xff\xfe"):
        assert parse_json(line) is None


def test_regex_named_groups_become_fields_and_missing_optional_groups_are_left_out() -> None:
    parser = RegexParser(r"^(?P<level>[A-Z]+) (?P<msg>.*?)(?: user=(?P<user>\w+))?$")
    assert parser(b"INFO started user=ann") == {"level": "INFO", "msg": "started", "user": "ann"}
    assert parser(b"WARN slow") == {"level": "WARN", "msg": "slow"}
    assert parser(b"lowercase line") is None


def test_regex_keeps_bytes_that_are_not_utf8() -> None:
    parser = RegexParser(r"^(?P<all>.*)$")
    fields = parser(b"caf\xe9")
    assert fields is not None
    assert fields["all"].encode("utf-8", "surrogateescape") == b"caf\xe9"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("(unclosed", "--regex '(unclosed':"), (r"^\w+$", "has no named group")],
)
def test_bad_regex_is_a_config_error(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RegexParser(pattern)


def test_logfmt_pairs_quoted_values_and_bare_keys() -> None:
    line = b'level=info msg="user logged in" user=ann escaped="say \\"hi\\"" empty= debug'
    assert parse_logfmt(line) == {
        "level": "info",
        "msg": "user logged in",
        "user": "ann",
        "escaped": 'say "hi"',
        "empty": "",
        "debug": True,
    }


@pytest.mark.parametrize("line", [b"just a sentence of words", b'msg="unterminated', b"", b'a=1 b="x"y'])
def test_logfmt_rejects_lines_that_are_not_pairs(line: bytes) -> None:
    assert parse_logfmt(line) is None


def test_make_parser_checks_regex_goes_with_parser_regex() -> None:
    assert make_parser("none", None) is None
    assert make_parser("json", None) is parse_json
    with pytest.raises(ConfigError, match="--parser regex needs --regex"):
        make_parser("regex", None)
    with pytest.raises(ConfigError, match="--regex is set but --parser is json"):
        make_parser("json", "(?P<a>.)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0 * 10**9),
        (T0 + 0.5, T0 * 10**9 + 500_000_000),
        (str(T0) + ".25", T0 * 10**9 + 250_000_000),
        ("2024-05-01T10:00:00Z", T0 * 10**9),
        ("2024-05-01T12:00:00.123456+02:00", T0 * 10**9 + 123_456_000),
        ("2024-05-01 10:00:00", T0 * 10**9),  # no zone: UTC
    ],
)
def test_time_reader_understands_epoch_seconds_and_iso8601(value: object, expected: int) -> None:
    assert TimeReader("ts", None)({"ts": value}) == expected


@pytest.mark.parametrize("value", [None, True, "yesterday", -5, float("nan"), "inf", 2**40, [1]])
def test_time_reader_falls_back_for_values_that_are_no_time(value: object) -> None:
    assert TimeReader("ts", None)({"ts": value}) is None
    assert TimeReader("ts", None)({}) is None


def test_time_reader_with_strptime_format() -> None:
    reader = TimeReader("time", "%d/%b/%Y:%H:%M:%S %z")
    assert reader({"time": "01/May/2024:12:00:00 +0200"}) == T0 * 10**9
    assert reader({"time": "2024-05-01T10:00:00Z"}) is None


def test_time_options_are_checked_against_the_parser() -> None:
    assert make_time_reader(None, None, "none") is None
    with pytest.raises(ConfigError, match="--time-key needs a --parser"):
        make_time_reader("ts", None, "none")
    with pytest.raises(ConfigError, match="--time-format is set without --time-key"):
        make_time_reader(None, "%s", "json")
