"""Options that cannot work are refused at start, one line each, naming the option and the range it takes."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from sidecar.modes.stream.cli import stream_command
from sidecar.options import BYTE_SIZE, DURATION

# (option, a value it cannot work with, the range the error must give)
OUT_OF_RANGE = [
    ("--max-line-bytes", "0", "from 256 to 64MiB"),
    ("--max-line-bytes", "3GiB", "from 256 to 64MiB"),
    ("--poll-interval", "0", "from 10ms to 1h"),
    ("--poll-interval", "2d", "from 10ms to 1h"),
    ("--rotate-wait", "30d", "from 0s to 1d"),
    ("--rotate-wait-max", "0s", "from 1s to 30d"),
    ("--ignore-older", "0", "from 1s to 3650d"),
    ("--checkpoint-interval", "0s", "from 10ms to 1m"),
    ("--checkpoint-interval", "5m", "from 10ms to 1m"),
    ("--forget-after", "99999d", "from 0s to 3650d"),
    ("--drain-timeout", "2h", "from 0s to 1h"),
]


def _run(mode: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # An unwritable checkpoint directory: a value that slipped through ends the run at once (exit 1).
    command = [sys.executable, "-m", "sidecar", mode, "/nowhere/*.log", "--checkpoint-dir", "/dev/null/state",
               "--metrics-port", "0", *(["--fluentd-host", "127.0.0.1"] if mode == "agent" else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("name", "value", "allowed"), OUT_OF_RANGE)
def test_a_follow_option_out_of_its_range_is_one_line_naming_it_and_the_range(
    name: str, value: str, allowed: str
) -> None:
    done = _run("stream", name, value)
    assert done.returncode == 2, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: Invalid value for '{name}'")
    assert error.endswith(f"{value!r} is out of range: give a {'size' if 'bytes' in name else 'duration'} {allowed}")


@pytest.mark.parametrize(("name", "value", "allowed"), [OUT_OF_RANGE[0], OUT_OF_RANGE[7]])
def test_agent_mode_refuses_the_same_follow_options(name: str, value: str, allowed: str) -> None:
    done = _run("agent", name, value)
    assert done.returncode == 2, done.stderr
    assert allowed in done.stderr


AGENT_OUT_OF_RANGE = [
    ("--ack-timeout", "0s", "from 100ms to 1h"),
    ("--flush-interval", "0", "from 10ms to 1h"),
    ("--outage-limit", "30d", "from 0s to 1d"),
    ("--multiline-timeout", "2h", "from 10ms to 1h"),
    ("--multiline-max-bytes", "1", "from 256 to 64MiB"),
    ("--chunk-records", "0", "1<=x<=1000000"),
    ("--max-in-flight", "100000", "1<=x<=1024"),
    ("--multiline-max-lines", "0", "1<=x<=100000"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), AGENT_OUT_OF_RANGE)
def test_an_agent_option_out_of_its_range_is_one_line_naming_it_and_the_range(
    name: str, value: str, allowed: str
) -> None:
    done = _run("agent", name, value)
    assert done.returncode == 2, done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: Invalid value for '{name}'")
    assert allowed in error


def test_a_value_from_the_environment_is_checked_alike() -> None:
    done = _run("stream", env={"SIDECAR_MAX_LINE_BYTES": "0"})
    assert done.returncode == 2
    assert "'0' is out of range: give a size from 256 to 64MiB" in done.stderr


def test_bounds_are_inclusive_and_keep_the_type_of_the_unbounded_one() -> None:
    size, duration = BYTE_SIZE.within("1KiB", "2MiB"), DURATION.within("10ms")
    assert size.convert("1KiB", None, None) == 1024
    assert size.convert("2MiB", None, None) == 2 * 1024 * 1024
    assert duration.convert("10ms", None, None) == pytest.approx(0.01)
    assert duration.convert("3650d", None, None) == 3650 * 86400
    with pytest.raises(click.BadParameter, match="give a size from 1KiB to 2MiB"):
        size.convert("1023", None, None)
    with pytest.raises(click.BadParameter, match="give a duration of at least 10ms"):
        duration.convert("9ms", None, None)
    assert BYTE_SIZE.convert("0", None, None) == 0


def test_inverted_or_unparsable_bounds_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="bad size bounds"):
        BYTE_SIZE.within("2MiB", "1KiB")
    with pytest.raises(ValueError, match="bad duration bounds"):
        DURATION.within("soon")


def test_every_size_and_duration_option_of_the_follow_core_has_a_range() -> None:
    scaled = {max(p.opts, key=len): p.type for p in stream_command.params if isinstance(p.type, type(BYTE_SIZE))}
    assert set(scaled) == {name for name, _, _ in OUT_OF_RANGE}
    unbounded = {BYTE_SIZE.describe_range(), DURATION.describe_range()}
    assert all(kind.describe_range() not in unbounded for kind in scaled.values())


def test_values_at_the_bounds_are_accepted() -> None:
    done = _run("stream", "--max-line-bytes", "256", "--poll-interval", "10ms", "--checkpoint-interval", "1m")
    assert done.returncode == 1
    assert "checkpoint dir /dev/null/state is not writable" in done.stderr
