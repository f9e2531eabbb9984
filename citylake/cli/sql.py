"""``citylake sql``: analyst SQL on the lake."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import duckdb
import typer
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load
from citylake.lake import Lake
from citylake.lake.export import export
from citylake.schemas import DataLayout


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


def sql(
    query: Annotated[str, typer.Argument(help="a DuckDB SQL query over readings, devices, alerts, ...")],
    config: ConfigOption = DEFAULT_CONFIG,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")] = OutputFormat.table,
) -> None:
    """Run SQL on the lake; tables are named as in the docs (readings, readings_1m, devices, ...)."""
    loaded = load(config)
    lake = Lake(DataLayout(loaded.config.data_dir))
    try:
        result = lake.cursor().execute(query).to_arrow_table()
    except duckdb.Error as exc:
        fail(f"query failed: {exc}")
    finally:
        lake.close()
    if fmt is OutputFormat.table:
        table = Table(*result.column_names, title=f"{result.num_rows} rows")
        for row in result.to_pylist():
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)
        return
    sys.stdout.buffer.write(export(result, fmt.value))  # type: ignore[arg-type]
    if fmt is OutputFormat.json:
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
