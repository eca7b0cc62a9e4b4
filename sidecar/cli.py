"""The ``sidecar`` command: one subcommand per mode and tool, every option also an env variable."""

from __future__ import annotations

import os
from typing import Any

import click

from sidecar import __version__
from sidecar.errors import ConfigError, SidecarError
from sidecar.options import follow_config, follow_options, option, runtime_options
from sidecar.runtime import ModeContext, run_mode, runtime_options_from
from sidecar.stream import StreamSink

MODES = ("stream", "agent")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sidecar")
def main() -> None:
    """Follow an application's log files and stream them to stdout or ship them to Fluentd/Fluent Bit."""


@main.command()
@follow_options
@runtime_options
@option("--format", "fmt", type=click.Choice(["raw", "json"]), default="raw", envvar="SIDECAR_FORMAT",
        help="raw: the exact bytes; json: one object per line with the file path and the line.")
def stream(fmt: str, **params: Any) -> None:
    """Write every line of the files matching GLOB to stdout, byte for byte, exactly once."""
    config = follow_config(params)

    def make_sink(ctx: ModeContext) -> StreamSink:
        return StreamSink(ctx.metrics, "json" if fmt == "json" else "raw")

    raise SystemExit(run_mode("stream", config, runtime_options_from(params), make_sink))


@main.command()
def run() -> None:
    """Start the mode named by SIDECAR_MODE (stream or agent), every option from SIDECAR_* variables."""
    mode = os.environ.get("SIDECAR_MODE", "")
    command = main.commands.get(mode) if mode in MODES else None
    if command is None:
        raise ConfigError(f"SIDECAR_MODE={mode!r} is not a mode: set SIDECAR_MODE to one of {', '.join(MODES)}")
    with command.make_context(mode, []) as ctx:
        command.invoke(ctx)


def entry() -> None:
    """Console entry point: our own errors become one line on stderr and an exit code, never a traceback."""
    try:
        main(standalone_mode=True)
    except SidecarError as exc:
        click.echo(f"sidecar: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc

from sidecar.inject import inject_command  # noqa: E402  (registered last: one line per engineer)
main.add_command(inject_command)
from sidecar.agent.cli import agent_command  # noqa: E402
main.add_command(agent_command)
