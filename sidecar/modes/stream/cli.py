"""The ``sidecar stream`` command: the follow core with stdout as its sink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from sidecar.core.config import FollowConfig
from sidecar.modes.stream.sink import Format, StreamSink
from sidecar.options import follow_config, follow_options, option, runtime_options
from sidecar.runtime import ModeContext, RuntimeOptions, run_mode, runtime_options_from


@dataclass(frozen=True, slots=True)
class StreamMode:
    """Stream mode's whole configuration, built once from the command line."""

    follow: FollowConfig
    runtime: RuntimeOptions
    format: Format = "raw"
    name: str = "stream"

    def make_sink(self, ctx: ModeContext) -> StreamSink:
        return StreamSink(ctx.metrics, self.format)


@click.command("stream")
@follow_options
@runtime_options
@option("--format", "fmt", type=click.Choice(["raw", "json"]), default="raw",
        help="raw: the exact bytes; json: one object per line with the file path and the line.")
def stream_command(fmt: str, **params: Any) -> None:
    """Write every line of the files matching GLOB to stdout, byte for byte, exactly once."""
    mode = StreamMode(follow_config(params), runtime_options_from(params), "json" if fmt == "json" else "raw")
    raise SystemExit(run_mode(mode))
