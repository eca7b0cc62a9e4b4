"""The ``sidecar stream`` command: the follow core with stdout as its sink."""

from __future__ import annotations

from typing import Any

import click

from sidecar.modes.stream.sink import StreamSink
from sidecar.options import follow_config, follow_options, option, runtime_options
from sidecar.runtime import ModeContext, run_mode, runtime_options_from


@click.command("stream")
@follow_options
@runtime_options
@option("--format", "fmt", type=click.Choice(["raw", "json"]), default="raw",
        help="raw: the exact bytes; json: one object per line with the file path and the line.")
def stream_command(fmt: str, **params: Any) -> None:
    """Write every line of the files matching GLOB to stdout, byte for byte, exactly once."""
    config = follow_config(params)

    def make_sink(ctx: ModeContext) -> StreamSink:
        return StreamSink(ctx.metrics, "json" if fmt == "json" else "raw")

    raise SystemExit(run_mode("stream", config, runtime_options_from(params), make_sink))
