"""``citylake lake``: look after the lake."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load
from citylake.lake.catalog import all_views_sql
from citylake.lake.compaction import compact_table
from citylake.lake.landing_gc import TableCollection, collect_landing
from citylake.lake.retention import retain_table, vacuum_table
from citylake.lake.stats import table_stats
from citylake.schemas import TABLES, DataLayout, TableSpec

app = typer.Typer(help="Lake maintenance: stats, compaction, retention.", no_args_is_help=True)

TableOption = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="only this table (repeatable); default: all")
]


def _tables(names: list[str] | None) -> list[TableSpec]:
    if not names:
        return list(TABLES.values())
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        fail(f"unknown table {', '.join(unknown)}; tables: {', '.join(TABLES)}")
    return [TABLES[n] for n in names]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command()
def stats(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Files, rows, bytes and time range of every lake table (current snapshot)."""
    loaded = load(config)
    table = Table("table", "version", "files", "rows", "bytes", "first", "last")
    for s in table_stats(DataLayout(loaded.config.data_dir)):
        table.add_row(
            s.table,
            str(s.version),
            str(s.files),
            f"{s.rows:,}",
            _size(s.bytes),
            s.first.isoformat(timespec="seconds") if s.first else "",
            s.last.isoformat(timespec="seconds") if s.last else "",
        )
    console.print(table)


def _reporter(progress: Progress, spec: TableSpec) -> Callable[[str, int], None]:
    def report(partition: str, files: int) -> None:
        progress.console.log(f"{spec.name} {partition or '(unpartitioned)'}: {files} files merged")

    return report


@app.command()
def compact(
    config: ConfigOption = DEFAULT_CONFIG,
    tables: TableOption = None,
    min_files: Annotated[int | None, typer.Option(min=2, help="default: lake.compact_min_files")] = None,
) -> None:
    """Merge small lake files, sorted by device and time; readers never see
    duplicates or gaps. Then delete files replaced more than the grace ago."""
    loaded = load(config)
    lake_config = loaded.config.lake
    layout = DataLayout(loaded.config.data_dir)
    results = []
    with Progress(console=console, transient=True) as progress:
        specs = _tables(tables)
        task = progress.add_task("compacting", total=len(specs))
        for spec in specs:
            progress.update(task, description=f"compacting {spec.name}")
            result = compact_table(
                layout,
                spec,
                target_bytes=lake_config.compact_target_mb * 1024 * 1024,
                min_files=min_files or lake_config.compact_min_files,
                on_group=_reporter(progress, spec),
            )
            vacuumed = vacuum_table(layout, spec, timedelta(seconds=lake_config.vacuum_grace_s))
            results.append((result, vacuumed))
            progress.advance(task)
    table = Table("table", "partitions", "files in", "files out", "rows", "bytes in", "bytes out", "deleted")
    for r, v in results:
        table.add_row(
            r.table, str(r.partitions), str(r.files_in), str(r.files_out), f"{r.rows:,}",
            _size(r.bytes_in), _size(r.bytes_out), f"{v.files_deleted} ({_size(v.bytes_deleted)})",
        )  # fmt: skip
    console.print(table)


@app.command()
def retain(
    config: ConfigOption = DEFAULT_CONFIG,
    tables: TableOption = None,
    days: Annotated[
        int | None, typer.Option(min=1, help="keep this many days; default: lake.retention_days")
    ] = None,
) -> None:
    """Retire date partitions older than each table's retention (lake.retention_days)."""
    loaded = load(config)
    lake_config = loaded.config.lake
    layout = DataLayout(loaded.config.data_dir)
    unknown = sorted(set(lake_config.retention_days) - set(TABLES))
    if unknown:
        fail(f"lake.retention_days names unknown tables {', '.join(unknown)}; tables: {', '.join(TABLES)}")
    if days is None and not tables:
        chosen = [(TABLES[n], d) for n, d in sorted(lake_config.retention_days.items())]
        if not chosen:
            fail("no retention configured: set lake.retention_days in city.yaml, or pass --table and --days")
    else:
        chosen = []
        for spec in _tables(tables):
            keep = days or lake_config.retention_days.get(spec.name)
            if keep is None:
                fail(f"no retention for {spec.name}: pass --days or set lake.retention_days.{spec.name}")
            chosen.append((spec, keep))
    table = Table("table", "kept from", "files retired")
    for spec, keep in chosen:
        try:
            result = retain_table(layout, spec, keep)
        except ValueError as exc:
            fail(str(exc))
        vacuum_table(layout, spec, timedelta(seconds=lake_config.vacuum_grace_s))
        table.add_row(result.table, result.retained_from.isoformat(), str(result.files_removed))
    console.print(table)


@app.command()
def views(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print CREATE VIEW statements over the lake's current snapshot for the
    DuckDB CLI or any DuckDB client: ``citylake lake views > v.sql; duckdb -init v.sql``."""
    loaded = load(config)
    sys.stdout.write(all_views_sql(DataLayout(loaded.config.data_dir)))


@app.command("gc-landing")
def gc_landing(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Remove landing files every configured job has consumed (the lake's
    committed files prove it) once older than landing.replay_window_h. One
    run; a site supervisor calls it every minute."""
    loaded = load(config)
    settings = loaded.config.landing
    console.log(
        f"collecting landing under {loaded.config.data_dir} for jobs "
        f"{', '.join(loaded.config.pipelines.jobs)} (replay window {settings.replay_window_h:g} h)"
    )

    def report(entry: TableCollection) -> None:
        console.log(f"{entry.table}: {entry.removed} of {entry.files} files removed" + (
            f" ({entry.note})" if entry.note else ""))  # fmt: skip

    result = collect_landing(loaded.config, on_table=report)
    table = Table("table", "read by", "files", "bytes", "in window", "examined", "removed", "waiting for")
    for t in result.tables:
        waiting = ", ".join(f"{job} ({n})" for job, n in t.waiting.items() if n) or t.note or ""
        table.add_row(
            t.table, ", ".join(t.readers) or "-", str(t.files), _size(t.bytes), str(t.in_replay_window),
            str(t.examined), f"{t.removed} ({_size(t.bytes_removed)})", waiting,
        )  # fmt: skip
    console.print(table)
    console.print(
        f"landing holds {_size(result.landing_bytes)} after removing {result.removed} files "
        f"({_size(result.bytes_removed)}) in {result.elapsed_s:.2f} s"
    )
