"""Command-line options shared by the modes, each also read from ``SIDECAR_<OPTION>``.

Options live here rather than in ``cli`` so that every mode's command can use the same decorators
without importing the CLI module. Multi-valued options read their environment variable as a comma
list, because that is how people write them in a pod spec.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from sidecar.core.config import FollowConfig

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_METRICS_PORT = 9433
ENV_PREFIX = "SIDECAR_"

_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZES = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def env_name(option: str) -> str:
    """``--checkpoint-dir`` -> ``SIDECAR_CHECKPOINT_DIR``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


class _Scaled(click.ParamType[Any]):
    """A number with an optional unit suffix (``5s``, ``2m``; ``16KiB``, ``1MiB``), within bounds.

    The unbounded :data:`DURATION` and :data:`BYTE_SIZE` only refuse what is not a number; every option
    uses :meth:`within` to refuse, in one line at start, values it cannot work with (a zero line length,
    a poll interval that spins, a buffer of gigabytes).
    """

    def __init__(self, name: str, units: dict[str, float] | dict[str, int], integer: bool,
                 shown: tuple[tuple[str, float], ...], bounds: tuple[float, float] = (0.0, math.inf)) -> None:
        self.name = name
        self._units = units
        self._integer = integer
        self._shown = shown
        self._bounds = bounds

    def within(self, minimum: str, maximum: str | None = None) -> _Scaled:
        """This type accepting only ``minimum`` to ``maximum``, written as values are (``"1KiB"``, ``"1h"``)."""
        low, high = self._scale(minimum), math.inf if maximum is None else self._scale(maximum)
        if low is None or high is None or low > high:
            raise ValueError(f"bad {self.name} bounds: {minimum!r}, {maximum!r}")
        return _Scaled(self.name, self._units, self._integer, self._shown, (low, high))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        scaled = self._scale(value)
        if scaled is None:
            self.fail(f"{value!r} is not a {self.name} (examples: {', '.join(self._examples())})", param, ctx)
        low, high = self._bounds
        if not low <= scaled <= high:
            self.fail(f"{value!r} is out of range: {self.describe_range()}", param, ctx)
        return int(scaled) if self._integer else scaled

    def describe_range(self) -> str:
        low, high = self._bounds
        if high == math.inf:
            return f"give a {self.name} of at least {self._show(low)}"
        return f"give a {self.name} from {self._show(low)} to {self._show(high)}"

    def _scale(self, value: Any) -> float | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        match = _NUMBER.match(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in self._units:
            return None
        return float(match.group(1)) * self._units[unit]

    def _show(self, amount: float) -> str:
        for unit, factor in self._shown:
            count = amount / factor
            if amount >= factor and abs(count - round(count)) < 1e-9:
                return f"{round(count)}{unit}"
        return f"{amount:g}" + next(unit for unit, factor in self._shown if factor == 1.0)

    def _examples(self) -> list[str]:
        return ["1048576", "16KiB", "1MiB"] if self._integer else ["0.5", "5s", "2m", "1h"]


DURATION = _Scaled("duration", _UNITS, integer=False,
                   shown=(("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)))
BYTE_SIZE = _Scaled("size", _SIZES, integer=True,
                    shown=(("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0), ("", 1.0)))


class EnvOption(click.Option):
    """An option whose environment variable is a comma list when the option is repeatable."""

    def value_from_envvar(self, ctx: click.Context) -> Any:
        raw = self.resolve_envvar_value(ctx)
        if raw is None or not self.multiple:
            return raw
        return [item.strip() for item in raw.split(",") if item.strip()]


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that also reads ``SIDECAR_<OPTION>`` and shows that name in ``--help``."""
    long = next(d for d in decls if d.startswith("--"))
    kwargs.setdefault("envvar", env_name(long))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=EnvOption, **kwargs)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


follow_options = compose(
    click.argument("paths", nargs=-1, metavar="GLOB..."),
    option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching this glob (repeatable)."),
    option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help="Directory for the state file; put it on a volume that outlives the container.",
    ),
    option(
        "--read-from",
        type=click.Choice(["head", "tail"]),
        default="head",
        help="Where to start files found at the very first start (no state file yet).",
    ),
    option(
        "--max-line-bytes",
        type=BYTE_SIZE.within("256", "64MiB"),  # below, ordinary lines split; above, one line is a memory hazard
        default="1MiB",
        help="Longer lines are split on a UTF-8 boundary and counted.",
    ),
    option(
        "--poll-interval",
        type=DURATION.within("10ms", "1h"),
        default="1s",
        help="Rescan globs this often; check every file's name and size this often too "
        "(with inotify, every 5th time: events report changes at once).",
    ),
    option(
        "--rotate-wait",
        type=DURATION.within("0s", "1d"),
        default="5s",
        help="Keep a rotated-away file open this long after it stops growing.",
    ),
    option(
        "--rotate-wait-max",
        type=DURATION.within("1s", "30d"),
        default="1h",
        help="Give up a rotated-away file still unread (or unacknowledged) after this long, counting its bytes.",
    ),
    option(
        "--ignore-older",
        type=DURATION.within("1s", "3650d"),
        default=None,
        help="Skip files not modified for this long when they are found.",
    ),
    option(
        "--checkpoint-interval",
        type=DURATION.within("10ms", "1m"),  # longer trips the 120 s checkpoint-stale alert on a healthy sidecar
        default="1s",
        help="Write the state file this often.",
    ),
    option(
        "--forget-after",
        type=DURATION.within("0s", "3650d"),
        default="24h",
        help="Drop state of files gone for this long.",
    ),
    option(
        "--drain-timeout",
        type=DURATION.within("0s", "1h"),
        default="0s",
        help="After SIGTERM keep following until files are quiet for 1 s, for at most this long.",
    ),
    option(
        "--watch",
        type=click.Choice(["auto", "inotify", "poll"]),
        default="auto",
        help="How to notice changes: inotify with polling as a safety net, or polling only.",
    ),
)

runtime_options = compose(
    option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=DEFAULT_METRICS_PORT,
        help="Serve /metrics, /healthz and /readyz here; 0 disables the endpoint.",
    ),
    option("--metrics-address", default="0.0.0.0", help="Address the metrics endpoint listens on."),
    option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        help="Least severe diagnostic written to stderr.",
    ),
    option(
        "--log-format",
        type=click.Choice(["logfmt", "json"]),
        default="logfmt",
        help="Diagnostics on stderr as key=value or JSON, one line per event.",
    ),
)


def resolve_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The globs from the command line, or else from ``SIDECAR_PATHS`` (comma separated)."""
    if paths:
        return tuple(paths)
    from_env = tuple(p.strip() for p in os.environ.get(env_name("paths"), "").split(",") if p.strip())
    if not from_env:
        raise click.UsageError(f"no files to follow: give GLOB arguments or set {env_name('paths')}")
    return from_env


def follow_config(params: dict[str, Any]) -> FollowConfig:
    """Build the core's configuration from the parsed :data:`follow_options`."""
    return FollowConfig(
        paths=resolve_paths(params["paths"]),
        exclude=tuple(params["exclude"]),
        checkpoint_dir=params["checkpoint_dir"],
        read_from=params["read_from"],
        max_line_bytes=params["max_line_bytes"],
        poll_interval=params["poll_interval"],
        rotate_wait=params["rotate_wait"],
        rotate_wait_max=params["rotate_wait_max"],
        ignore_older=params["ignore_older"],
        checkpoint_interval=params["checkpoint_interval"],
        forget_after=params["forget_after"],
        drain_timeout=params["drain_timeout"],
        watch=params["watch"],
    )
