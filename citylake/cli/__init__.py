"""The ``citylake`` command (the top floor: imported by nothing)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import typer
import typer.main
from typer import _click as click  # typer 0.29 runs on its own copy of click
from typer.core import TyperGroup

from citylake.cli import lake, pipeline, sync
from citylake.cli.ingest import ingest
from citylake.cli.run import run
from citylake.cli.serve import serve
from citylake.cli.sql import sql

# Commands other distributions add: the test bench (devstack/, the
# citylake-devstack distribution) adds demo, simulate and scale. They load
# when a command line reaches them (or --help lists them), not when this
# module is imported: their modules import citylake.cli.common, so loading
# them here would import them half-way through this package's own import.
COMMANDS_GROUP = "citylake.commands"


class _WithInstalledCommands(TyperGroup):
    def _installed(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self._installed()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        ep = self._installed().get(cmd_name)
        return None if ep is None else installed_command(ep)


def installed_command(ep: EntryPoint) -> click.Command | None:
    """A Typer app or a command function from another distribution, as a click
    command; a broken one is named on stderr and left out, so it cannot take
    the product's own commands down with it."""
    try:
        loaded = ep.load()
    except Exception as exc:
        typer.echo(f"citylake: command {ep.name!r} from {ep.value} not loaded: {exc}", err=True)
        return None
    if isinstance(loaded, typer.Typer):
        command: click.Command = typer.main.get_group(loaded)
    else:
        single = typer.Typer()
        single.command()(loaded)
        command = typer.main.get_command(single)
    command.name = ep.name
    return command


app = typer.Typer(
    name="citylake",
    cls=_WithInstalledCommands,
    help="Smart-city edge data lake: ingest devices, process with Flink, query the lake.",
    epilog="demo, simulate and scale come with the test bench (devstack/; in a checkout: make setup).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(ingest)
app.command()(run)
app.command()(serve)
app.command()(sql)
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(lake.app, name="lake")
app.add_typer(sync.app, name="sync")


def main() -> None:
    app()
