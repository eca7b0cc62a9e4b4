"""Entry point for ``python -m sidecar``."""

from sidecar.cli import entry

entry()
