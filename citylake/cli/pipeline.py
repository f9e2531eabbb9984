"""``citylake pipeline``: run PyFlink jobs locally or on a session cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from citylake.cli.common import (
    DEFAULT_CONFIG,
    ConfigOption,
    console,
    fail,
    load,
    setup_logging,
)
from citylake.config import CityConfig, LoadedConfig
from citylake.lake.registry import SchemaChanged
from citylake.pipelines.flink_rest import FlinkRest, FlinkRestError

if TYPE_CHECKING:
    from citylake.pipelines.jobs import JobSet

app = typer.Typer(
    help="Run PyFlink jobs on the local mini-cluster or a Flink session cluster.", no_args_is_help=True
)


class Mode(StrEnum):
    streaming = "streaming"
    batch = "batch"


JobArg = Annotated[
    str,
    typer.Argument(
        help="job name: readings, rollups, alerts, devices, events, or one of pipelines.user_jobs "
        "(`citylake pipeline jobs` lists them); several, comma-separated (readings,rollups,alerts), "
        "run as ONE Flink job in one mini-cluster"
    ),
]
ModeOption = Annotated[Mode, typer.Option("--mode", "-m", help="streaming (continuous) or batch (backfill)")]
RulesFromOption = Annotated[
    str | None,
    typer.Option(
        "--rules-from",
        help="alerts: read the rules from the alerts service (http://host:port, or its Dapr app id "
        "through DAPR_HTTP_PORT) instead of pipelines.alerts_from / pipelines.alerts",
    ),
]
RestOption = Annotated[
    str | None, typer.Option("--rest-url", help="Flink REST endpoint (default pipelines.flink.rest_url)")
]


@app.command()
def run(
    job: JobArg,
    config: ConfigOption = DEFAULT_CONFIG,
    mode: ModeOption = Mode.streaming,
    from_: Annotated[str | None, typer.Option("--from", help="batch: first event time (ISO 8601)")] = None,
    to: Annotated[str | None, typer.Option("--to", help="batch: end of event time (ISO 8601)")] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="streaming: ignore checkpoints of earlier runs and start over")
    ] = False,
    rules_from: RulesFromOption = None,
) -> None:
    """Run a job on Flink's embedded mini-cluster until it ends (batch) or Ctrl-C (streaming).
    A batch run with --from/--to reprocesses that event-time range (a backfill).
    A streaming alerts job follows its rules: when they change (in the alerts
    service, or in pipelines.alerts of the config) it re-plans itself from a savepoint."""
    setup_logging()
    loaded = load(config)
    time_range = _time_range(mode, from_, to)
    from citylake.pipelines import runner
    from citylake.pipelines.local_jvm import size_local_jvm

    job_set = _checked_job_set(loaded, config, job)
    if rules_from is not None and "alerts" not in job_set.names:
        fail("--rules-from is for the alerts job", code=2)
    size_local_jvm(loaded.config.pipelines.flink)
    what = job_set.names[0] if len(job_set.names) == 1 else f"{', '.join(job_set.names)} as one Flink job"
    console.print(f"running {what} in {mode.value} mode on Flink's local mini-cluster")
    try:
        if "alerts" in job_set.names:
            _run_alerts(loaded.config, config.resolve(), mode, time_range, fresh, rules_from, job_set)
        else:
            runner.run(loaded.config, job_set, mode.value, time_range, fresh=fresh)
    except (runner.JobSetChanged, SchemaChanged) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopped")


def _checked_job_set(loaded: LoadedConfig, config_path: Path, names: str) -> JobSet:
    """The jobs named, each user job among them planned by Flink first: a bad
    one exits 2 with file, line and reason before anything runs."""
    from citylake.pipelines.catalog import JobRefused, job_catalog
    from citylake.pipelines.check import check_job

    try:
        catalog = job_catalog(loaded.config, config_path, loaded.document)
        job_set = catalog.job_set([j.strip() for j in names.split(",") if j.strip()])
        for name in job_set.names:
            if name in catalog.user:
                check_job(loaded.config, catalog, name, config_path, loaded.document)
    except JobRefused as exc:
        fail(str(exc), code=2)
    except (KeyError, ValueError) as exc:
        fail(str(exc.args[0]), code=2)
    return job_set


def _time_range(mode: Mode, from_: str | None, to: str | None) -> tuple[datetime, datetime] | None:
    if not (from_ or to):
        return None
    if mode is not Mode.batch:
        fail("--from/--to select a backfill range: use them with --mode batch", code=2)
    if not (from_ and to):
        fail("give both --from and --to (ISO 8601, e.g. 2026-11-25T00:00:00Z)", code=2)
    time_range = (_instant(from_, "--from"), _instant(to, "--to"))
    if time_range[0] >= time_range[1]:
        fail(f"--from {from_} is not before --to {to}", code=2)
    return time_range


def _run_alerts(
    config: CityConfig,
    config_path: Path,
    mode: Mode,
    time_range: tuple[datetime, datetime] | None,
    fresh: bool,
    rules_from: str | None,
    job_set: JobSet,
) -> None:
    from citylake.pipelines import runner
    from citylake.pipelines.alerts.follow import follow, with_rules
    from citylake.pipelines.alerts.rulesource import RulesUnavailable, rule_source

    try:
        source = rule_source(rules_from or config.pipelines.alerts_from, config, config_path)
    except ValueError as exc:
        fail(str(exc), code=2)
    if mode is Mode.streaming:
        console.print(f"following the alert rules of {source.describe()}")
        follow(config, source, config.pipelines.alerts_poll_s, fresh=fresh, jobs=job_set)
        return
    try:
        rules = source.rules()
    except RulesUnavailable as exc:
        fail(f"{exc}; a batch run plans from the rules it reads at its start")
    if not rules:
        console.print(
            f"no alert rules in {source.describe()}: the run reads the readings and writes 0 alerts"
        )
    else:
        console.print(f"{len(rules)} alert rule(s) from {source.describe()}")
    runner.run(with_rules(config, rules), job_set, "batch", time_range, fresh=fresh)
    if not rules:
        console.print("done: 0 alert rows (no rules)")


def _instant(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {text!r} is not ISO 8601 (e.g. 2026-11-25T08:00:00Z)", code=2)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command()
def submit(
    job: JobArg,
    config: ConfigOption = DEFAULT_CONFIG,
    mode: ModeOption = Mode.streaming,
    rest_url: RestOption = None,
    from_savepoint: Annotated[
        str | None,
        typer.Option("--from-savepoint", help="resume from this savepoint (printed by cancel --savepoint)"),
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="batch: first event time (ISO 8601)")] = None,
    to: Annotated[str | None, typer.Option("--to", help="batch: end of event time (ISO 8601)")] = None,
    rules_from: RulesFromOption = None,
) -> None:
    """Submit a job to a Flink session cluster with `flink run --python` (detached).
    A batch submit with --from/--to is a backfill of that event-time range on the cluster.
    The alerts job is planned from the rules read at submission; to apply changed rules,
    `cancel --savepoint` it and submit again with --from-savepoint (its state carries over)."""
    setup_logging()
    loaded = load(config)
    time_range = _time_range(mode, from_, to)
    if rules_from is not None and job != "alerts":
        fail("--rules-from is for the alerts job", code=2)
    url = rest_url or loaded.config.pipelines.flink.rest_url
    if not url:
        fail("no Flink cluster: pass --rest-url or set pipelines.flink.rest_url in the config", code=2)
    from citylake.pipelines import runner

    _checked_job_set(loaded, config, job)
    try:
        job_id = runner.submit(
            loaded.config,
            config.resolve(),
            job,
            mode.value,
            url,
            from_savepoint,
            time_range=time_range,
            rules_from=rules_from,
        )
    except (RuntimeError, KeyError, SchemaChanged) as exc:
        fail(str(exc))
    typer.echo(job_id)


def _rest(config: Path, rest_url: str | None) -> FlinkRest:
    loaded = load(config)
    url = rest_url or loaded.config.pipelines.flink.rest_url
    if not url:
        fail("no Flink cluster: pass --rest-url or set pipelines.flink.rest_url in the config", code=2)
    return FlinkRest(url)


@app.command("list")
def list_jobs(config: ConfigOption = DEFAULT_CONFIG, rest_url: RestOption = None) -> None:
    """Jobs on the session cluster."""
    try:
        jobs = _rest(config, rest_url).jobs()
    except FlinkRestError as exc:
        fail(str(exc))
    for item in jobs:
        typer.echo(f"{item['jid']}  {item['state']:<10} {item['name']}")


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Flink job id")],
    config: ConfigOption = DEFAULT_CONFIG,
    rest_url: RestOption = None,
    savepoint: Annotated[
        bool,
        typer.Option(
            help="stop with a savepoint (under <data_dir>/savepoints); resume with submit --from-savepoint"
        ),
    ] = False,
) -> None:
    """Cancel a job on the session cluster, or stop it with a savepoint."""
    rest = _rest(config, rest_url)
    try:
        if savepoint:
            target = (load(config).config.data_dir / "savepoints").resolve()
            target.mkdir(parents=True, exist_ok=True)
            location = rest.stop_with_savepoint(job_id, target.as_uri())
            typer.echo(location)
            return
        rest.cancel(job_id)
    except FlinkRestError as exc:
        fail(str(exc))
    typer.echo(f"cancelled {job_id}")


@app.command("jobs")
def list_known_jobs(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Every job this config can run or submit: the built-in ones, then pipelines.user_jobs
    and those of installed packages (entry point group citylake.jobs)."""
    from citylake.pipelines.catalog import JobRefused, job_catalog

    loaded = load(config)
    try:
        catalog = job_catalog(loaded.config, config, loaded.document)
    except JobRefused as exc:
        fail(str(exc), code=2)
    for name in catalog.names:
        typer.echo(f"{name:<20} {catalog.describe(name)}")


@app.command()
def check(
    job: Annotated[str, typer.Argument(help="a user job (pipelines.user_jobs), or several comma-separated")],
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Plan a job in Flink (both modes) without running it: a syntax error, an unknown
    table or column, a column type other than the declared output's, an updating result
    the append-only lake cannot take, or a changed schema of an existing output is
    reported with file, line and reason (exit 2). run and submit do the same first."""
    setup_logging()
    loaded = load(config)
    job_set = _checked_job_set(loaded, config, job)
    from citylake.pipelines.jobs import JOB_NAMES

    own = [n for n in job_set.names if n not in JOB_NAMES]
    if own:
        console.print(f"ok: {', '.join(own)} planned in streaming and batch mode")
    else:
        console.print(f"ok: {', '.join(job_set.names)} (built-in jobs, tested with citylake)")


@app.command("sql-client")
def sql_client(
    config: ConfigOption = DEFAULT_CONFIG,
    mode: ModeOption = Mode.batch,
    rest_url: Annotated[
        str | None,
        typer.Option(
            "--rest-url",
            help="run statements on this Flink session cluster (default pipelines.flink.rest_url; "
            "without either, on a local mini-cluster)",
        ),
    ] = None,
    init_only: Annotated[
        bool, typer.Option("--init-only", help="write the init file, print its path and exit")
    ] = False,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="run this SQL script instead of the interactive shell")
    ] = None,
) -> None:
    """Open Flink's own SQL Client (sql-client.sh of the apache-flink package) on citylake's
    tables: landing_<table>, readings_deduped and every lake table as lake_<table>, declared
    by an init file (<data_dir>/flink/sql-client-init-<mode>.sql)."""
    import subprocess

    from citylake.pipelines.jars import FlinkJarsMissing
    from citylake.pipelines.sql_client import SqlGatewayMissing, sql_client_command, write_init_file

    loaded = load(config)
    init_file = write_init_file(loaded.config, mode.value)
    if init_only:
        typer.echo(str(init_file))
        return
    url = rest_url or loaded.config.pipelines.flink.rest_url
    try:
        command, env = sql_client_command(init_file, url, file)
    except (FlinkJarsMissing, SqlGatewayMissing) as exc:
        fail(str(exc))
    raise typer.Exit(subprocess.run(command, env=env, check=False).returncode)
