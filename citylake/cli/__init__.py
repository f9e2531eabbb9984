"""The ``citylake`` command (floor 4: imported by nothing)."""

from __future__ import annotations

import typer

from citylake.cli import lake, pipeline, scale, simulate, sync
from citylake.cli.demo import demo
from citylake.cli.ingest import ingest
from citylake.cli.run import run
from citylake.cli.serve import serve
from citylake.cli.sql import sql

app = typer.Typer(
    name="citylake",
    help="Smart-city edge data lake: ingest devices, process with Flink, query the lake.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(demo)
app.command()(ingest)
app.command()(run)
app.command()(serve)
app.command()(sql)
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(simulate.app, name="simulate")
app.add_typer(lake.app, name="lake")
app.add_typer(sync.app, name="sync")
app.add_typer(scale.app, name="scale")


def main() -> None:
    app()
