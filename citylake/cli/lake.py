"""``citylake lake``: look after the lake."""

from __future__ import annotations

import typer
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, load, not_implemented
from citylake.lake.stats import table_stats
from citylake.schemas import DataLayout

app = typer.Typer(help="Lake maintenance: stats, compaction, retention.", no_args_is_help=True)


@app.command()
def stats(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Files, rows, bytes and date range of every lake table."""
    loaded = load(config)
    table = Table("table", "files", "rows", "bytes", "first date", "last date")
    for s in table_stats(DataLayout(loaded.config.data_dir)):
        table.add_row(
            s.table, str(s.files), str(s.rows), str(s.bytes), str(s.first_date or ""), str(s.last_date or "")
        )
    console.print(table)


@app.command()
def compact(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Merge small lake files without readers ever seeing duplicates or gaps."""
    load(config)
    not_implemented("lake compact", 5)


@app.command()
def retain(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Drop partitions older than each table's retention."""
    load(config)
    not_implemented("lake retain", 5)
