"""Command-line options shared by the modes, each also read from ``SIDECAR_<OPTION>``.

Options live here rather than in ``cli`` so that every mode's command can use the same decorators
without importing the CLI module. Multi-valued options read their environment variable as a comma
list, because that is how people write them in a pod spec.
"""

from __future__ import annotations

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
    """A number with an optional unit suffix (``5s``, ``2m``; ``16KiB``, ``1MiB``)."""

    def __init__(self, name: str, units: dict[str, float] | dict[str, int], integer: bool) -> None:
        self.name = name
        self._units = units
        self._integer = integer

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return int(value) if self._integer else float(value)
        match = _NUMBER.match(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in self._units:
            self.fail(f"{value!r} is not a {self.name} (examples: {', '.join(self._examples())})", param, ctx)
        scaled = float(match.group(1)) * self._units[unit]
        return int(scaled) if self._integer else scaled

    def _examples(self) -> list[str]:
        return ["1048576", "16KiB", "1MiB"] if self._integer else ["0.5", "5s", "2m", "1h"]


DURATION = _Scaled("duration", _UNITS, integer=False)
BYTE_SIZE = _Scaled("size", _SIZES, integer=True)


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
        type=BYTE_SIZE,
        default="1MiB",
        help="Longer lines are split on a UTF-8 boundary and counted.",
    ),
    option("--poll-interval", type=DURATION, default="1s", help="Rescan globs and stat files this often."),
    option(
        "--rotate-wait",
        type=DURATION,
        default="5s",
        help="Keep a rotated-away file open this long after it stops growing.",
    ),
    option(
        "--rotate-wait-max",
        type=DURATION,
        default="1h",
        help="Give up a rotated-away file still unread (or unacknowledged) after this long, counting its bytes.",
    ),
    option(
        "--ignore-older",
        type=DURATION,
        default=None,
        help="Skip files not modified for this long when they are found.",
    ),
    option("--checkpoint-interval", type=DURATION, default="1s", help="Write the state file this often."),
    option("--forget-after", type=DURATION, default="24h", help="Drop state of files gone for this long."),
    option(
        "--drain-timeout",
        type=DURATION,
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
