"""``citylake ingest``: run the configured sources into the landing zone."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from prometheus_client import start_http_server

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.config import ConfigError
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout


def ingest(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="only these sources")] = None,
    check: Annotated[bool, typer.Option("--check", help="try each source's connection and exit")] = False,
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port; 0 = off")] = 0,
) -> None:
    """Receive from every configured source and land the data durably."""
    setup_logging()
    loaded = load(config)
    try:
        sources = build_sources(loaded, set(source) if source else None)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if not sources:
        fail("no enabled sources in the config (sources: [...] is empty or filtered out)", code=2)
    if check:
        asyncio.run(_check(sources))
        return
    runner = IngestRunner(sources, DataLayout(loaded.config.data_dir), loaded.config.site)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=runner.metrics.registry)
    names = ", ".join(f"{s.name} ({s.config.type})" for s in sources)
    console.print(f"ingesting from {names} into {loaded.config.data_dir / 'landing'}; Ctrl-C stops")
    asyncio.run(_run(runner))


async def _run(runner: IngestRunner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.run(stop)


async def _check(sources: list) -> None:  # type: ignore[type-arg]
    failed = 0
    for src in sources:
        try:
            await src.check()
            console.print(f"[green]ok[/]   {src.name}")
        except SourceUnavailable as exc:
            failed += 1
            console.print(f"[red]fail[/] {src.name}: {exc}")
    if failed:
        raise typer.Exit(1)
