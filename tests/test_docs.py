"""The documented contract: every option has its SIDECAR_* variable, and the README lists them all."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from sidecar.cli import COMMANDS, main
from sidecar.options import env_name

README = (Path(__file__).parent.parent / "README.md").read_text()


def _options(name: str) -> list[click.Option]:
    command = main.get_command(click.Context(main), name)
    assert command is not None
    return [p for p in command.params if isinstance(p, click.Option) and p.name not in {"help", "version"}]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_reads_its_sidecar_variable(name: str) -> None:
    for param in _options(name):
        long = max(param.opts, key=len)
        assert param.envvar == env_name(long), f"sidecar {name} {long} reads {param.envvar}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_documents_every_option_with_its_variable(name: str) -> None:
    for param in _options(name):
        long = max(param.opts, key=len)
        assert f"`{long}`" in README, f"README does not document sidecar {name} {long}"
        assert f"`{param.envvar}`" in README, f"README does not name {param.envvar}"


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:1500]
    assert "make run" in head
    assert "make test" in head


def test_architecture_names_every_module_of_the_package() -> None:
    """ARCHITECTURE.md is the map of the code: a module it does not name is a part nobody can find."""
    text = (Path(__file__).parent.parent / "ARCHITECTURE.md").read_text()
    package = Path(__file__).parent.parent / "sidecar"
    missing = []
    for module in sorted(package.rglob("*.py")):
        if module.name.startswith("__"):
            continue
        relative = module.relative_to(package).with_suffix("")
        folder = relative.parent.as_posix()
        named = (f"`{relative.as_posix()}`" in text
                 or (folder == "." and f"`{relative.name}`" in text)
                 or (folder != "." and f"`{folder}/`" in text))
        if not named:
            missing.append(relative.as_posix())
    assert not missing, f"ARCHITECTURE.md does not name: {', '.join(missing)}"
