"""``citylake pipeline``: run PyFlink jobs locally or on a session cluster."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import httpx
import typer

from citylake.cli.common import (
    DEFAULT_CONFIG,
    ConfigOption,
    console,
    fail,
    load,
    not_implemented,
    setup_logging,
)

app = typer.Typer(
    help="Run PyFlink jobs on the local mini-cluster or a Flink session cluster.", no_args_is_help=True
)


class Mode(StrEnum):
    streaming = "streaming"
    batch = "batch"


JobArg = Annotated[str, typer.Argument(help="job name: readings")]
ModeOption = Annotated[Mode, typer.Option("--mode", "-m", help="streaming (continuous) or batch (backfill)")]
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
) -> None:
    """Run a job on Flink's embedded mini-cluster until it ends (batch) or Ctrl-C (streaming)."""
    setup_logging()
    loaded = load(config)
    if from_ or to:
        not_implemented("pipeline run --from/--to", 5)
    from citylake.pipelines import runner

    console.print(f"running {job} in {mode.value} mode on Flink's local mini-cluster")
    try:
        runner.run(loaded.config, job, mode.value)
    except KeyError as exc:
        fail(str(exc.args[0]), code=2)
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def submit(
    job: JobArg,
    config: ConfigOption = DEFAULT_CONFIG,
    mode: ModeOption = Mode.streaming,
    rest_url: RestOption = None,
) -> None:
    """Submit a job to a Flink session cluster with `flink run --python` (detached)."""
    setup_logging()
    loaded = load(config)
    url = rest_url or loaded.config.pipelines.flink.rest_url
    if not url:
        fail("no Flink cluster: pass --rest-url or set pipelines.flink.rest_url in the config", code=2)
    from citylake.pipelines import runner

    try:
        job_id = runner.submit(loaded.config, config.resolve(), job, mode.value, url)
    except (RuntimeError, KeyError) as exc:
        fail(str(exc))
    typer.echo(job_id)


@app.command("list")
def list_jobs(config: ConfigOption = DEFAULT_CONFIG, rest_url: RestOption = None) -> None:
    """Jobs on the session cluster."""
    loaded = load(config)
    url = rest_url or loaded.config.pipelines.flink.rest_url
    if not url:
        fail("no Flink cluster: pass --rest-url or set pipelines.flink.rest_url in the config", code=2)
    try:
        jobs = httpx.get(f"{url.rstrip('/')}/jobs/overview", timeout=10).json()["jobs"]
    except httpx.HTTPError as exc:
        fail(f"Flink REST {url} unreachable: {exc}")
    for item in jobs:
        typer.echo(f"{item['jid']}  {item['state']:<10} {item['name']}")


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Flink job id")],
    config: ConfigOption = DEFAULT_CONFIG,
    rest_url: RestOption = None,
    savepoint: Annotated[bool, typer.Option(help="stop with a savepoint")] = False,
) -> None:
    """Cancel a job on the session cluster."""
    loaded = load(config)
    if savepoint:
        not_implemented("pipeline cancel --savepoint", 5)
    url = rest_url or loaded.config.pipelines.flink.rest_url
    if not url:
        fail("no Flink cluster: pass --rest-url or set pipelines.flink.rest_url in the config", code=2)
    response = httpx.patch(f"{url.rstrip('/')}/jobs/{job_id}", params={"mode": "cancel"}, timeout=10)
    if response.status_code >= 400:
        fail(f"cancel failed: {response.status_code} {response.text[:500]}")
    typer.echo(f"cancelled {job_id}")
