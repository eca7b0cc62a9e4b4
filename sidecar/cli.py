"""The ``sidecar`` command: one subcommand per mode and tool, every option also an env variable.

Subcommands are imported only when used, so ``sidecar stream`` never pays for the YAML library of
``inject`` or the msgpack code of ``agent`` at start-up.
"""

from __future__ import annotations

import importlib
import os

import click

from sidecar import __version__
from sidecar.errors import ConfigError, SidecarError
from sidecar.modes import MODES

COMMANDS = {
    **MODES,
    "status": "sidecar.tools.status:status_command",
    "inject": "sidecar.tools.inject:inject_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in their own modules and load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attr = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sidecar")
def main() -> None:
    """Follow an application's log files and stream them to stdout or ship them to Fluentd/Fluent Bit."""


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Start the mode named by SIDECAR_MODE (stream or agent), every option from SIDECAR_* variables."""
    mode = os.environ.get("SIDECAR_MODE", "")
    command = main.get_command(ctx, mode) if mode in MODES else None
    if command is None:
        raise ConfigError(f"SIDECAR_MODE={mode!r} is not a mode: set SIDECAR_MODE to one of {', '.join(MODES)}")
    with command.make_context(mode, [], parent=ctx) as sub:
        command.invoke(sub)


def entry() -> None:
    """Console entry point: our own errors become one line on stderr and an exit code, never a traceback."""
    try:
        main(standalone_mode=True)
    except SidecarError as exc:
        click.echo(f"sidecar: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc
