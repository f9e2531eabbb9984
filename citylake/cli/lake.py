"""``citylake lake``: look after the lake."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.lake.catalog import all_views_sql
from citylake.lake.compaction import compact_table
from citylake.lake.landing_gc import LandingTask, TableCollection, collect_landing
from citylake.lake.maintenance import Action, ConfigProblem, MaintenanceScheduler, build_tasks
from citylake.lake.manifest import TableLog
from citylake.lake.registry import lake_tables
from citylake.lake.retention import retain_table, vacuum_table
from citylake.lake.stats import table_stats
from citylake.schemas import DataLayout, TableSpec

app = typer.Typer(
    help="Lake maintenance: stats, compaction, retention, the scheduled maintainer, DuckDB CLI views.",
    no_args_is_help=True,
)

TableOption = Annotated[
    list[str] | None, typer.Option("--table", "-t", help="only this table (repeatable); default: all")
]


def _tables(layout: DataLayout, names: list[str] | None) -> list[TableSpec]:
    """Built-in tables and those user jobs registered in this lake."""
    known = lake_tables(layout)
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        fail(f"unknown table {', '.join(unknown)}; tables: {', '.join(known)}")
    return [known[n] for n in names]


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
        specs = _tables(layout, tables)
        task = progress.add_task("compacting", total=len(specs))
        for spec in specs:
            progress.update(task, description=f"compacting {spec.name}")
            result = compact_table(
                layout,
                spec,
                target_bytes=lake_config.compact_target_mb * 1024 * 1024,
                min_files=min_files or lake_config.compact_min_files,
                on_group=_reporter(progress, spec),
                memory_mb=lake_config.compact_memory_mb,
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
    today: Annotated[
        str | None,
        typer.Option(
            help="count the days from this date (YYYY-MM-DD) instead of the clock, and skip the check "
            "that refuses a clock far ahead of the newest data"
        ),
    ] = None,
) -> None:
    """Retire date partitions older than each table's retention (lake.retention_days)."""
    loaded = load(config)
    lake_config = loaded.config.lake
    layout = DataLayout(loaded.config.data_dir)
    known = lake_tables(layout)
    unknown = sorted(set(lake_config.retention_days) - set(known))
    if unknown:
        fail(f"lake.retention_days names unknown tables {', '.join(unknown)}; tables: {', '.join(known)}")
    if days is None and not tables:
        chosen = [(known[n], d) for n, d in sorted(lake_config.retention_days.items())]
        if not chosen:
            fail("no retention configured: set lake.retention_days in city.yaml, or pass --table and --days")
    else:
        chosen = []
        for spec in _tables(layout, tables):
            keep = days or lake_config.retention_days.get(spec.name)
            if keep is None:
                fail(f"no retention for {spec.name}: pass --days or set lake.retention_days.{spec.name}")
            chosen.append((spec, keep))
    table = Table("table", "kept from", "files retired")
    try:
        given = date.fromisoformat(today) if today is not None else None
    except ValueError:
        fail(f"--today {today!r} is not a date (YYYY-MM-DD)")
    for spec, keep in chosen:
        try:
            if given is None:
                result = retain_table(layout, spec, keep)
            else:
                result = retain_table(layout, spec, keep, today=given, max_clock_lead_days=None)
        except ValueError as exc:
            fail(str(exc))
        vacuum_table(layout, spec, timedelta(seconds=lake_config.vacuum_grace_s))
        table.add_row(result.table, result.retained_from.isoformat(), str(result.files_removed))
    console.print(table)


@app.command()
def views(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Print CREATE VIEW statements for the DuckDB CLI or any DuckDB client:
    ``citylake lake views > v.sql; duckdb -init v.sql``. The views read the
    lake's log at each query, so one session sees new commits and keeps
    working across compaction and vacuum; run again only after an upgrade."""
    loaded = load(config)
    sys.stdout.write(all_views_sql(DataLayout(loaded.config.data_dir)))


def _print_action(action: Action) -> None:
    # One JSON object per line on stdout, for log collectors; the rest of the
    # command's talk goes to the console (stderr).
    sys.stdout.write(json.dumps(action.as_record()) + "\n")
    sys.stdout.flush()


@app.command()
def maintain(
    config: ConfigOption = DEFAULT_CONFIG,
    once: Annotated[bool, typer.Option("--once", help="run every task once, then exit")] = False,
    metrics_port: Annotated[int, typer.Option(help="port for /healthz and Prometheus /metrics; 0 = off")] = 0,
    metrics_host: Annotated[
        str,
        typer.Option(help="address of that server; 0.0.0.0 where Prometheus scrapes from outside (a pod)"),
    ] = "127.0.0.1",
) -> None:
    """Keep the lake in shape until stopped: compaction, vacuum and retention
    on the schedule of ``lake.maintenance`` (one JSON line per table and task
    on stdout). SIGTERM or Ctrl-C stops after the commit under way."""
    setup_logging()
    loaded = load(config)
    lake_config = loaded.config.lake
    layout = DataLayout(loaded.config.data_dir)
    try:
        landing = LandingTask(loaded.config, loaded.config.landing.collect_every_s)
        tasks = build_tasks(layout, lake_config, extra=[landing])
    except ConfigProblem as exc:
        fail(f"{exc} (in {config})", code=2)
    for spec in lake_tables(layout).values():
        # The DuckDB CLI's live views read these; a new lake gets them now.
        TableLog(layout, spec).publish_for_readers()
    scheduler = MaintenanceScheduler(tasks, on_action=_print_action)
    stop = threading.Event()
    if once:
        for task in tasks:
            scheduler.run_once(task, stop.is_set)
        failing = {n: s.last_error for n, s in scheduler.status.items() if s.last_error}
        if failing:
            fail(f"maintenance failed: {failing}; see the log above")
        return

    def request_stop(signum: int, _frame: object) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping after the commit under way (again: at once)")
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = None
    if metrics_port:
        from citylake.lake.maintenance_ops import MaintenanceOpsServer

        try:
            server = MaintenanceOpsServer(scheduler, metrics_host, metrics_port)
        except OSError as exc:
            fail(
                f"cannot serve health on {metrics_host}:{metrics_port}: {exc}; choose another --metrics-port"
            )
        console.print(f"health and metrics: http://{metrics_host}:{server.port}/healthz  /metrics")
    every = ", ".join(f"{t.name} every {t.every_s:g} s" for t in tasks)
    console.print(f"maintaining {layout.lake_root}: {every}; Ctrl-C stops")
    try:
        scheduler.run(stop)
    finally:
        if server is not None:
            server.close()
    console.print("maintenance stopped; the lake's log is whole")


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
