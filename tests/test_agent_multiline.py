"""Multiline grouping: presets for Java, Python and Go traces, a custom start regex, and the bounds."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.modes.agent.multiline import Grouper, make_rule_factory


def group(text: str, preset: str | None = None, start: str | None = None, **bounds: int) -> list[str]:
    """Every group of ``text``'s lines, the last one flushed as at the multiline timeout."""
    factory = make_rule_factory(preset, start)
    assert factory is not None
    grouper = Grouper(factory(), bounds.get("max_lines", 1000), bounds.get("max_bytes", 1 << 20))
    lines = text.encode().split(b"\n")
    done = grouper.feed(lines, 0.0)
    last = grouper.flush()
    return [g.decode() for g in [*done, *([last] if last is not None else [])]]


JAVA = """\
2024-05-01 10:00:00 INFO started
2024-05-01 10:00:01 ERROR request failed
java.lang.IllegalStateException: boom
\tat com.shop.Cart.add(Cart.java:42)
\tat com.shop.Api.post(Api.java:7)
Caused by: java.io.IOException: disk
\tat com.shop.Disk.write(Disk.java:3)
\t... 12 more
2024-05-01 10:00:02 INFO recovered"""


def test_java_trace_joins_the_logged_message_exception_frames_and_causes() -> None:
    assert group(JAVA, "java") == [
        "2024-05-01 10:00:00 INFO started",
        "\n".join(JAVA.split("\n")[1:8]),
        "2024-05-01 10:00:02 INFO recovered",
    ]


PYTHON = """\
INFO:app:started
ERROR:app:request failed
Traceback (most recent call last):
  File "app.py", line 3, in <module>
    main()
KeyError: 'user'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "app.py", line 5, in <module>
    raise RuntimeError("wrapped")
RuntimeError: wrapped
INFO:app:next"""


def test_python_traceback_with_a_chained_exception_is_one_record() -> None:
    lines = PYTHON.split("\n")
    assert group(PYTHON, "python") == [lines[0], "\n".join(lines[1:13]), lines[13]]


def test_python_indented_lines_outside_a_traceback_start_their_own_records() -> None:
    assert group("a\n  indented\nb", "python") == ["a", "  indented", "b"]


GO = """\
level=info msg=serving
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.handler(0xc000012345, {0x1, 0x2})
\t/app/main.go:12 +0x1d
created by main.main in goroutine 1
\t/app/main.go:30 +0x55
exit status 2
level=info msg=restarted"""


def test_go_panic_runs_through_the_goroutine_dump() -> None:
    lines = GO.split("\n")
    assert group(GO, "go") == [lines[0], "\n".join(lines[1:9]), lines[9]]


def test_custom_start_regex_begins_a_record_at_each_match() -> None:
    text = "2024 first\n  continued\n\tmore\n2024 second\n2024 third\n  x"
    assert group(text, start=r"^\d{4} ") == [
        "2024 first\n  continued\n\tmore",
        "2024 second",
        "2024 third\n  x",
    ]


def test_lines_before_the_first_start_form_a_group_of_their_own() -> None:
    assert group("orphan\nS1\nc", start="^S") == ["orphan", "S1\nc"]


def test_group_at_its_line_bound_is_closed_and_the_rest_continues_in_a_new_group() -> None:
    factory = make_rule_factory(None, "^S")
    assert factory is not None
    grouper = Grouper(factory(), max_lines=3, max_bytes=1 << 20)
    done = grouper.feed([b"S", b"c1", b"c2", b"c3", b"c4", b"S2"], 0.0)
    assert done == [b"S\nc1\nc2", b"c3\nc4"]
    assert grouper.split == 1
    assert grouper.flush() == b"S2"


def test_group_at_its_byte_bound_is_closed() -> None:
    factory = make_rule_factory(None, "^S")
    assert factory is not None
    grouper = Grouper(factory(), max_lines=100, max_bytes=10)
    assert grouper.feed([b"S", b"cccc", b"dddd", b"e"], 0.0) == [b"S\ncccc"]
    assert grouper.flush() == b"dddd\ne"
    assert grouper.split == 1


def test_group_spans_feeds_until_the_next_start() -> None:
    factory = make_rule_factory("java", None)
    assert factory is not None
    grouper = Grouper(factory(), 1000, 1 << 20)
    assert grouper.feed([b"ERROR x", b"java.lang.Error: y"], 1.0) == []
    assert grouper.pending
    assert grouper.updated == 1.0
    assert grouper.feed([b"\tat a.b(C.java:1)", b"INFO ok"], 2.0) == [
        b"ERROR x\njava.lang.Error: y\n\tat a.b(C.java:1)"
    ]
    assert grouper.flush() == b"INFO ok"
    assert grouper.flush() is None
    assert not grouper.pending


@pytest.mark.parametrize(
    ("preset", "start", "message"),
    [
        ("java", "^x", "--multiline and --multiline-start both set"),
        ("ruby", None, "--multiline 'ruby': unknown preset"),
        (None, "(", "--multiline-start '\\(':"),
    ],
)
def test_multiline_option_errors(preset: str | None, start: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_rule_factory(preset, start)


def test_no_multiline_options_mean_no_grouping() -> None:
    assert make_rule_factory(None, None) is None
